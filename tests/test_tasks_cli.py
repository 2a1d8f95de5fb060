"""The real lmms-eval CLI lists the project's tasks and runs them end to end on a small generated suite.

Two simple models drive the CLI: lmms-eval's own ``dummy`` (always answers "A", decodes the videos) and a
test-only plugin model (registered through ``LMMS_EVAL_PLUGINS``) that decodes each video with
``harness.data.video.read_video`` and answers from the annotation: with loglikelihood it returns the
lmms-eval convention (a loss: lower is better), so the oracle must score exactly 1.0 and any sign or
letter-mapping bug in the task plumbing shows up as a score below 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LMMS = shutil.which("lmms-eval", path=str(Path(sys.executable).parent)) or shutil.which("lmms-eval")
pytestmark = pytest.mark.skipif(LMMS is None, reason="lmms-eval CLI not installed")

MIA_TASKS = ["mia_needle_what", "mia_needle_when", "mia_count", "mia_order", "mia_direction", "mia_location",
             "mia_colour"]
GROUPS = ["mia_long", "mia_dense", "mia_all", "paper_long", "paper_dense"]

ORACLE = textwrap.dedent('''
    """Test-only lmms-eval model: decodes the video, answers with the annotated letter."""
    from lmms_eval.api.model import lmms

    from harness.data.video import read_video


    class MiaOracle(lmms):
        def __init__(self, **kwargs):
            super().__init__()

        def _doc(self, req):
            _, _, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            (path,) = doc_to_visual(doc)
            frames = read_video(path, 4, size=32)
            assert tuple(frames.shape) == (4, 32, 32, 3), frames.shape
            return doc

        def loglikelihood(self, requests):
            out = []
            for req in requests:
                doc = self._doc(req)
                cont = req.args[1].strip()
                gold = doc["answer"]
                out.append((0.0 if cont == gold else 7.5, cont == gold))  # (loss, is_greedy)
            return out

        def generate_until(self, requests):
            return [f"Answer: ({self._doc(r)['answer']})." for r in requests]

        def generate_until_multi_round(self, requests):
            raise NotImplementedError
''')


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    from harness.data.synthetic import SuiteSpec, make_suite

    out = tmp_path_factory.mktemp("lmms") / "suite"
    make_suite(out, SuiteSpec(n_train=0, n_val=0, n_test=48, frames_long=16, frames_dense=16, size=32),
               workers=1, progress=False)
    return out


def _env(tmp: Path, suite: Path, plugin: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["MIA_SUITE_DIR"] = str(suite)
    env["HF_DATASETS_CACHE"] = str(tmp / "hf_cache")
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    if plugin:
        pkg = tmp / "plugin" / "miatest"
        (pkg / "models").mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "models" / "__init__.py").write_text('AVAILABLE_MODELS = {"mia_oracle": "MiaOracle"}\n')
        (pkg / "models" / "mia_oracle.py").write_text(ORACLE)
        (pkg / "tasks").mkdir(exist_ok=True)  # lmms-eval also scans <plugin>.tasks
        (pkg / "tasks" / "__init__.py").write_text("")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp / "plugin"), str(REPO), env.get("PYTHONPATH", "")])
        env["LMMS_EVAL_PLUGINS"] = "miatest"
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([LMMS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    log = r.stdout + r.stderr
    # lmms-eval 0.7.3 logs some failures and still exits 0, so look for its error line too
    assert r.returncode == 0 and "Error during evaluation" not in log, f"lmms-eval failed:\n{log[-4000:]}"
    return r


def _results(out_dir: Path) -> dict:
    files = sorted(out_dir.rglob("*results*.json"))
    assert files, f"no results json under {out_dir}"
    return json.loads(files[-1].read_text())["results"]


def test_cli_lists_project_tasks(tmp_path, suite):
    r = _run(["tasks", "list", "--include-path", str(REPO / "tasks")], _env(tmp_path, suite), tmp_path)
    names = {ln.strip() for ln in r.stdout.splitlines()}
    for name in MIA_TASKS + [t + "_gen" for t in MIA_TASKS] + GROUPS:
        assert name in names, f"{name} missing from `lmms-eval tasks list`"


@pytest.mark.slow
def test_cli_runs_loglik_and_generate_tasks_end_to_end(tmp_path, suite):
    """mia_all (multiple_choice) and mia_count_gen (generate_until) through the real CLI: the oracle
    must score 1.0 everywhere, per family and in the group aggregates."""
    out = tmp_path / "out"
    _run(["--model", "mia_oracle", "--tasks", "mia_all,mia_count_gen", "--include_path", str(REPO / "tasks"),
          "--batch_size", "1", "--output_path", str(out)], _env(tmp_path, suite, plugin=True), tmp_path)
    res = _results(out)
    for name in MIA_TASKS + ["mia_long", "mia_dense", "mia_all", "mia_count_gen"]:
        assert name in res, f"{name} not in results: {sorted(res)}"
        assert res[name]["acc,none"] == pytest.approx(1.0), (name, res[name])


@pytest.mark.slow
def test_cli_builtin_dummy_model_scores_the_letter_frequency(tmp_path, suite):
    """lmms-eval's own `dummy` model always answers "A" (and decodes every video): its accuracy must equal
    the share of "A" answers in the test split, which the balanced generator makes exactly 1/4."""
    from harness.data.synthetic import load_items

    out = tmp_path / "out"
    _run(["--model", "dummy", "--model_args", "response=A,decode_num_frames=2", "--tasks", "mia_dense_gen",
          "--include_path", str(REPO / "tasks"), "--batch_size", "1", "--output_path", str(out)],
         _env(tmp_path, suite), tmp_path)
    res = _results(out)
    for fam in ("order", "direction", "location"):
        items = load_items(suite, "test", [fam])
        share_a = sum(it["answer"] == "A" for it in items) / len(items)
        assert share_a == pytest.approx(0.25)
        assert res[f"mia_{fam}_gen"]["acc,none"] == pytest.approx(share_a)


def test_missing_suite_error_names_the_path(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("MIA_SUITE_DIR", str(tmp_path / "nope"))
    spec = importlib.util.spec_from_file_location("mia_task_utils", REPO / "tasks" / "mia" / "utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(FileNotFoundError, match="make-synthetic"):
        _ = mod.data_files_count
    assert mod.parse_letter("Answer: (C).") == "C"
    assert mod.parse_letter("B") == "B"
    assert mod.parse_letter("A red circle") == "A"
    assert mod.parse_letter("none") is None


def test_multiple_choice_scorer_reads_stringified_losses():
    """lmms-eval 0.7.3 hands process_results str(model output); a failed video's loss is inf."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mia_task_utils2", REPO / "tasks" / "mia" / "utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = {"answer_index": 2}
    assert mod.mia_process_multiple_choice(doc, ["(1.5, False)", "(0.9, False)", "(0.2, True)", "(3.0, False)"]) \
        == {"acc": 1.0}
    # any non-finite loss marks a video the plugin could not read: wrong, whatever the other options say
    assert mod.mia_process_multiple_choice(doc, ["(1.5, False)", "(0.9, False)", "(0.2, True)", "(inf, False)"]) \
        == {"acc": 0.0}
    assert mod.mia_process_multiple_choice(doc, [(0.1, True), (0.9, False), (0.2, False), (3.0, False)]) \
        == {"acc": 0.0}
    assert mod.mia_process_multiple_choice(doc, ["(inf, False)"] * 4) == {"acc": 0.0}  # ties: first letter
