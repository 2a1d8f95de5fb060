"""Real lmms-eval benchmarks, offline: Video-MME, MLVU, LongVideoBench, LVBench, EgoSchema, MVBench (one
subtask) and NExT-QA (mc), each as a few items in its exact dataset schema with real video files where
lmms-eval's own utils look for them (harness.data.minibench), scored by the unmodified lmms-eval tasks
through the real ``lmms-eval`` CLI on a trained tiny checkpoint, and through a sweep."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import RunConfig, build
from harness.data.minibench import BENCHMARKS, build_minibench, minibench_env

ROOT = Path(__file__).resolve().parents[1]
#: each benchmark's own metric (lmms-eval 0.7.3 task YAMLs)
METRICS = {"videomme": "videomme_perception_score", "mlvu_dev": "mlvu_percetion_score",
           "longvideobench_val_v": "lvb_acc", "lvbench": "lvbench_score", "egoschema_subset": "score",
           "mvbench_action_count": "mvbench_accuracy", "nextqa_mc_test": "exact_match"}
needs_decord = pytest.mark.skipif(importlib.util.find_spec("decord") is None,
                                  reason="lmms-eval's longvideobench utils import decord (pip install decord)")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[RunConfig, Path, Path]:
    """A tiny checkpoint trained on the synthetic suite, and the mini benchmarks under an HF_HOME; item 0
    of Video-MME (answer A) has a truncated video."""
    from harness.data.synthetic import SuiteSpec, make_suite
    from harness.train import train_run

    root = tmp_path_factory.mktemp("bench")
    make_suite(root / "suite", SuiteSpec(n_train=16, n_val=0, n_test=4, families=["colour"], frames_long=16,
                                         frames_dense=16), workers=1, progress=False)
    cfg = build(RunConfig, {
        "data": {"suite": str(root / "suite"), "cache_dir": str(root / "cache"), "n_frames": 4},
        "model": {"compressor": {"block": "conv", "spatial": {"period": 16, "n_layers": 1}}},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "lr": 3e-3},
        "eval": {"backend": "lmms_eval", "tasks": list(METRICS), "batch_size": 4},
    })
    train_run(cfg, root / "run", progress=False)
    hf = root / "hf"
    rows = build_minibench(hf, list(BENCHMARKS), n_items=3, n_frames=8)
    assert rows["videomme"][0]["answer"] == "A"
    v0 = hf / BENCHMARKS["videomme"].video(0)
    v0.write_bytes(v0.read_bytes()[:200])
    return cfg, root / "run", hf


@pytest.fixture()
def hf_env(bench, monkeypatch):
    for k, v in minibench_env(bench[2]).items():
        monkeypatch.setenv(k, v)
    return bench


@needs_decord
@pytest.mark.slow
def test_seven_benchmarks_through_the_real_cli(hf_env):
    """One ``lmms-eval --model mambamia`` call on all seven: each record row is the benchmark's own metric
    with lmms-eval's n and higher-is-better, the LLM's input tokens per sample from TokenCounts, the
    resolved prompt, the --log_samples files linked; the unreadable Video-MME video is a wrong answer."""
    from harness.evaluate import eval_dir, evaluate_run

    cfg, run_dir, _ = hf_env
    res = evaluate_run(cfg, run_dir, progress=False)
    rows = {m["task"]: m for m in res["metrics"]}
    assert {t: rows[t]["metric"] for t in METRICS} == METRICS
    for t, r in rows.items():
        assert r["n"] == 3 and r["higher_is_better"] is True and r["filter"] == "none", (t, r)
        # input = BOS + the task's prompt text + 4 frames x 4 visual tokens
        assert r["input_tokens"] > res["tokens"]["llm_visual"] == 16, (t, r)
    assert rows["videomme"]["n_failed"] == 1 and sum(r["n_failed"] for r in rows.values()) == 1
    [failed] = res["extra"]["failed"]
    assert failed["task"] == "videomme" and failed["doc_id"] == 0 and failed["file"].endswith("mme0000.mp4")
    assert failed["reason"]
    out = eval_dir(cfg, run_dir)
    assert set(res["extra"]["samples"]) == set(METRICS)
    vm = [json.loads(x) for x in (run_dir / res["extra"]["samples"]["videomme"]).read_text().splitlines()]
    doc0 = next(x for x in vm if x["doc_id"] == 0)
    assert doc0["filtered_resps"] in ("", [""]) and doc0["videomme_perception_score"]["score"] == 0.0
    assert all(x["token_counts"][0]["input_tokens"] > 16 for x in vm if x["doc_id"] != 0)
    assert "Answer with the option's letter" in res["extra"]["prompts"]["videomme"]
    assert res["extra"]["model_args"]["n_frames"] == 4 and len(res["extra"]["model_args"]["weights"]) == 16
    assert json.loads((out / "result.json").read_text())["metrics"] == res["metrics"]
    assert res["extra"]["results_json"].startswith("eval/lmms_eval/")


@pytest.mark.slow
def test_sweep_study_on_three_benchmarks(hf_env, tmp_path):
    """The issue's done-when: a study with suites [videomme, mlvu_dev, lvbench] rejects a misspelt suite
    before any job, plans, runs on the offline mini sets, and its report shows each benchmark's own metric
    with the token budget."""
    cfg, _, hf = hf_env
    env = {**os.environ, **minibench_env(hf), "PYTHONPATH": str(ROOT)}
    spec = tmp_path / "bench3.yaml"
    text = f"""
study: bench3
base:
  data: {{suite: {cfg.data.suite}, cache_dir: {cfg.data.cache_dir}, n_frames: 4}}
  model: {{compressor: {{block: conv, spatial: {{period: 16, n_layers: 1}}}}}}
  train: {{steps: 2, batch_size: 4, warmup_steps: 1}}
  eval: {{backend: lmms_eval, batch_size: 4, model_args: {{max_frames_num: 4}}}}
grid:
  model.compressor.pooling: [weighted]
seeds: [0]
suites: [videomme, mlvu, lvbench]
"""
    spec.write_text(text)
    res = tmp_path / "res"

    def sweep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness.sweep", str(spec), "--results", str(res), *args,
                               "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)

    bad = sweep()
    assert bad.returncode != 0 and "suites[1]: unknown lmms-eval task 'mlvu'; did you mean mlvu_dev" in bad.stderr
    assert not (res / "store").exists()  # nothing ran
    spec.write_text(text.replace("mlvu,", "mlvu_dev,"))
    ok = sweep()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    from harness.store import ResultsStore

    store = ResultsStore(res / "store")
    [entry] = store.read_study("bench3")["runs"]
    rec = store.read_run(entry["run_id"])
    assert rec["status"] == "done", rec.get("reason")
    got = {m["task"]: m["metric"] for m in rec["metrics"]}
    assert got == {t: METRICS[t] for t in ("videomme", "mlvu_dev", "lvbench")}
    assert rec["tokens"]["llm_input_mean"] > 16 and rec["extra"]["n_failed"] == 1
    rep = subprocess.run([sys.executable, "-m", "harness.report", "--study", "bench3", "--store",
                          str(res / "store"), "--out", str(tmp_path / "rep"), "--no-figures", "-q"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    md = next((tmp_path / "rep").rglob("table_main.md")).read_text()
    for t in ("videomme (videomme_perception_score)", "mlvu dev (mlvu_percetion_score)", "lvbench (lvbench_score (%))"):
        assert t in md, md
    assert "LLM input tokens" in md and "LLM tokens 16" in md and "count as wrong answers" in md, md


def _utils(folder: str):
    import lmms_eval

    path = Path(lmms_eval.__file__).parent / "tasks" / folder / "utils.py"
    spec = importlib.util.spec_from_file_location(f"_lmms_utils_{folder}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PARSERS = {"videomme": ("videomme", "videomme_process_results"), "mlvu_dev": ("mlvu", "mlvu_process_results"),
           "lvbench": ("lvbench", "lvbench_process_results"),
           "longvideobench_val_v": ("longvideobench", "longvideobench_process_results"),
           "egoschema_subset": ("egoschema", "egoschema_process_results_generation"),
           "mvbench_action_count": ("mvbench", "mvbench_process_results"),
           "nextqa_mc_test": ("nextqa", "nextqa_mc_process_results")}
#: benchmarks whose parser answers an unparseable response with a random letter (a failed video's empty
#: answer can then count right: the harness reports those as n_failed_right)
GUESSING = {"longvideobench_val_v", "egoschema_subset", "nextqa_mc_test"}


@pytest.mark.parametrize("task", list(PARSERS))
def test_each_benchmark_parses_its_answers(task, hf_env):
    """The mini items fit each benchmark's own process_results: letters, "(B)", "The best answer is: B",
    free text; an empty answer is wrong unless the benchmark guesses."""
    from harness.evaluate import _sample_correct

    if task == "longvideobench_val_v" and importlib.util.find_spec("decord") is None:
        pytest.skip("lmms-eval's longvideobench utils import decord")
    folder, fn = PARSERS[task]
    process = getattr(_utils(folder), fn)
    doc = build_minibench(hf_env[2] / "parse", [task], n_items=2, n_frames=2)[task][1]  # answer B
    for resp in ("B", "(B)", "B. blue", "The best answer is: B", "The answer is B.", "I think it is B because"):
        out = process(doc, [resp])
        assert _sample_correct(out, METRICS[task]) is True, (task, resp, out)
    for resp in ("A", "(C)", "The best answer is: D"):
        assert _sample_correct(process(doc, [resp]), METRICS[task]) is False, (task, resp)
    if task not in GUESSING:
        assert _sample_correct(process(doc, [""]), METRICS[task]) is False, task
