"""Suite names resolve through lmms-eval's own task manager before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.lmms_tasks import check_lmms_task, did_you_mean, known_tasks
from harness.sweep.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_real_benchmarks_and_paper_groups_are_lmms_eval_names():
    known = known_tasks()
    for t in ("videomme", "mlvu_dev", "mlvu_test", "longvideobench_val_v", "lvbench", "egoschema_subset",
              "mvbench", "mvbench_action_count", "nextqa_mc_test", "mia_long", "mia_colour_gen"):
        assert t in known, t
    assert known["paper_long"] == known["paper_dense"] == known["mvbench"] == "group"
    assert check_lmms_task("paper_long") is None


def test_misspelt_suite_says_what_was_meant():
    msg = check_lmms_task("mlvu")
    assert "unknown lmms-eval task 'mlvu'" in msg and "mlvu_dev" in msg and "mlvu_test" in msg
    assert did_you_mean("videome", known_tasks())[0] == "videomme"


def test_spec_rejects_a_misspelt_suite_before_any_job(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("study: s\nbase: {eval: {backend: lmms_eval}}\ngrid: {seed: [0]}\n"
                 "suites: [videomme, mlvu, lvbench]\n")
    p.write_text(p.read_text().replace("grid: {seed: [0]}\n", "grid: {train.steps: [2, 3, 4]}\n"))
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert f"{p}: suites[1]: unknown lmms-eval task 'mlvu'; did you mean mlvu_dev, mlvu_test" in str(ei.value)
    p.write_text(p.read_text().replace("mlvu,", "mlvu_dev,"))
    assert load_spec(p).suites == ["videomme", "mlvu_dev", "lvbench"]


def test_paper_study_names_real_tasks():
    spec = load_spec(ROOT / "ablations" / "five_way_paper.yaml")
    assert spec.suites == ["lvbench", "mlvu_dev", "videomme"]
