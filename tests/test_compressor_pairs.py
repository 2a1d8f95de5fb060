"""The compressor_pairs report table (harness/report/compressor_pairs.py) and its spec-time check."""

from __future__ import annotations

import pytest

from harness.identity import current_versions
from harness.report import report_study
from harness.report.data import ReportError
from harness.store import ResultsStore
from harness.sweep.report_check import check_report

CURRENT = {**current_versions(), "dataset": "synthetic:test"}  # records of the current code

COMPRESSORS = [{"proposed": {"block": "bi_ssm"}}, {"self_attention": {"block": "transformer"}}]
# proposed - self_attention: +5 pp with small noise at 8 frames; noise around 0 at 16 frames
ACC = {(8, "bi_ssm"): [0.80, 0.82, 0.79], (8, "transformer"): [0.75, 0.76, 0.75],
       (16, "bi_ssm"): [0.70, 0.75, 0.72], (16, "transformer"): [0.74, 0.71, 0.72]}


def _store(root, pairs):
    store = ResultsStore(root)
    entries = []
    for (frames, block), accs in ACC.items():
        for seed, acc in enumerate(accs):
            rid = f"cp-{frames}-{block}-{seed}"
            entries.append({"run_id": rid, "seed": seed, "variant": {"frames": frames, "block": block}, "label": rid})
            store.write_run({"run_id": rid, "seed": seed, "status": "done", "identity": CURRENT,
                             "finished": "2026-12-03T10:00:00", "config": {"eval": {"tasks": ["mia_compress"]}},
                             "metrics": [{"task": "mia_compress", "metric": "acc", "value": acc, "n": 100}],
                             "tokens": {"llm_visual": 8}, "extra": {"protocol": "probe"}})
    store.write_study("cp", entries, {
        "description": "pairs", "axes": {"frames": "data.n_frames", "block": "model.compressor.block"},
        "report": {"x": "frames", "plugins": ["harness.report.figures_v2", "harness.report.compressor_pairs"],
                   "compressors": COMPRESSORS, "compressor_compare": pairs, "figures": []}})
    return store


def test_pairs_per_frame_count_with_verdicts(tmp_path):
    rep = report_study(_store(tmp_path / "s", [["proposed", "self_attention"]]), "cp", tmp_path / "out",
                       progress=False)
    table = next(a for a in rep.artifacts if a.kind == "table:compressor_pairs").files[0].read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| proposed")]
    assert len(rows) == 2
    assert "| 8 |" in rows[0] and "+5.0" in rows[0] and "significant: proposed better" in rows[0]
    assert "| 16 |" in rows[1] and "not significant" in rows[1]
    assert "proposed vs self_attention: significant: proposed better at frames 8; not significant at frames 16" in table


def test_unknown_compressor_is_refused_at_report_and_at_spec_time(tmp_path):
    with pytest.raises(ReportError, match=r"compressor_compare\[0\]: 'bimba' is not a name"):
        report_study(_store(tmp_path / "s", [["proposed", "bimba"]]), "cp", tmp_path / "out", progress=False)
    probs = check_report({"compressors": COMPRESSORS, "compressor_compare": [["proposed", "self_atention"]]},
                         {"model.compressor.block": "block"}, {"block": ["bi_ssm", "transformer"]})
    assert probs == [("report.compressor_compare[0]", "'self_atention' is not a name of report.compressors "
                      "(did you mean 'self_attention'?); names: proposed, self_attention")]
