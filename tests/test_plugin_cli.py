"""The lmms-eval plugin: entry-point registration, the real ``lmms-eval`` CLI on a trained tiny
checkpoint, and equality of the lmms-eval and native scorers on the same items."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.config import RunConfig, build
from harness.data.synthetic import SuiteSpec, make_suite

FAMS = ["needle_what", "needle_when", "count", "location"]  # mia_long = the first three


def test_entry_point_registers_mambamia():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points().select(group="lmms_eval.models") if ep.name == "mambamia"]
    assert eps and eps[0].value == "harness.lmms_plugin:manifest"
    from lmms_eval.models import get_model

    from harness.lmms_plugin import MambaMiaLMM

    assert get_model("mambamia") is MambaMiaLMM


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunConfig, Path]:
    from harness.train import train_run

    root = tmp_path_factory.mktemp("plugin")
    make_suite(root / "suite", SuiteSpec(n_train=48, n_val=0, n_test=32, families=FAMS, frames_long=16,
                                         frames_dense=16), workers=1, progress=False)
    cfg = build(RunConfig, {
        "data": {"suite": str(root / "suite"), "cache_dir": str(root / "cache"), "n_frames": 4},
        "model": {"compressor": {"block": "conv", "spatial": {"period": 16, "n_layers": 1}}},
        "train": {"steps": 8, "batch_size": 4, "warmup_steps": 2, "lr": 3e-3},
        "eval": {"tasks": ["mia_long", "mia_location"], "batch_size": 4},
    })
    train_run(cfg, root / "run", progress=False)
    return cfg, root / "run"


@pytest.mark.slow
def test_real_cli_matches_native(trained):
    from harness.evaluate import eval_dir, evaluate_run, find_results_json, lmms_eval_command
    from harness.lmms_plugin import weights_hash

    cfg, run_dir = trained
    native = evaluate_run(cfg, run_dir, progress=False)
    cli_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, backend="lmms_eval",
                                                                lmms_eval_launch="cli"))
    out_dir = eval_dir(cli_cfg, run_dir)
    cmd = lmms_eval_command(run_dir, cli_cfg, out_dir)
    assert cmd[1:4] == ["--model", "mambamia", "--model_args"] and "--log_samples" in cmd
    assert cmd[4] == (f"checkpoint={run_dir},mode=loglik,weights={weights_hash(run_dir)},"
                      f"output_dir={out_dir}")
    lm = evaluate_run(cli_cfg, run_dir, progress=False)  # runs the real `lmms-eval` command
    raw = json.loads(find_results_json(out_dir).read_text())
    assert {"mia_long", "mia_needle_what", "mia_needle_when", "mia_count", "mia_location"} <= set(raw["results"])
    assert raw["n-samples"]["mia_count"]["effective"] == 8
    assert 0.0 <= raw["results"]["mia_long"]["acc,none"] <= 1.0
    nat = {m["task"]: (m["value"], m["n"]) for m in native["metrics"]}
    via = {m["task"]: (m["value"], m["n"]) for m in lm["metrics"]}
    assert set(nat) == set(via) == {"mia_needle_what", "mia_needle_when", "mia_count", "mia_location",
                                    "mia_long", "mia_dense", "mia_all"}
    for task in nat:
        assert nat[task][1] == via[task][1], task
        assert nat[task][0] == pytest.approx(via[task][0], abs=1e-9), task
    # the plugin read the videos through the project's cache and reported the token path
    want = {"visual_in": 4 * 64, "llm_visual": 4 * 4, "llm_visual_min": 16, "llm_visual_max": 16}
    assert {k: native["tokens"][k] for k in want} == want  # measured per video, as counted
    assert {k: lm["tokens"][k] for k in want} == want
    assert lm["extra"]["n_failed"] == 0 and all(m["n_failed"] == 0 for m in lm["metrics"])
    # each suite's outputs stay apart: the native and lmms-eval results of this suite are both kept
    assert (eval_dir(cfg, run_dir) / "result.json").is_file() and (out_dir / "result.json").is_file()
    assert set(lm["extra"]["samples"]) == {"mia_needle_what", "mia_needle_when", "mia_count", "mia_location"}


def _damage(suite: Path, family: str) -> list[str]:
    """Break every test video of ``family`` in a copy of the suite: empty, truncated, random bytes, and a
    dangling link, in turn. Returns the damaged files."""
    import os
    import random

    items = [json.loads(x) for x in (suite / "annotations" / family / "test.jsonl").read_text().splitlines() if x]
    out = []
    for k, it in enumerate(items):
        p = Path(it["video"]) if Path(it["video"]).is_absolute() else suite / it["video"]
        data = p.read_bytes()
        p.unlink()
        if k % 4 == 0:
            p.write_bytes(b"")
        elif k % 4 == 1:
            p.write_bytes(data[: len(data) // 3])
        elif k % 4 == 2:
            p.write_bytes(random.Random(k).randbytes(len(data)))
        else:
            os.symlink(suite / "no_such_file.mp4", p)
        out.append(str(p))
    return out


@pytest.mark.slow
def test_failed_videos_score_wrong_through_the_cli(trained, tmp_path):
    """Damaged videos of one family: through the real CLI every one of them is wrong (before, the task's
    tie-break counted the ones whose answer is A right), counted in n and n_failed, and listed whole."""
    import shutil

    from harness.evaluate import evaluate_run

    cfg, run_dir = trained
    suite = tmp_path / "suite"
    shutil.copytree(cfg.data.suite, suite, symlinks=True)
    for jl in suite.rglob("*.jsonl"):  # videos are stored relative or absolute: point them at the copy
        jl.write_text(jl.read_text().replace(str(Path(cfg.data.suite).resolve()), str(suite)))
    broken = _damage(suite, "count")
    answers = [json.loads(x)["answer"] for x in (suite / "annotations/count/test.jsonl").read_text().splitlines() if x]
    assert "A" in answers  # the case the old tie-break got wrong
    for backend in ("lmms_eval", "native"):
        c = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, suite=str(suite)),
                                eval=dataclasses.replace(cfg.eval, backend=backend, tasks=["mia_count"]))
        res = evaluate_run(c, run_dir, progress=False)
        row = next(m for m in res["metrics"] if m["task"] == "mia_count")
        assert row["value"] == 0.0 and row["n"] == len(broken) == row["n_failed"], (backend, row)
        assert res["extra"]["n_failed"] == len(res["extra"]["failed"]) == len(broken)  # all listed, no cut
        files = {Path(f.get("file") or "").name for f in res["extra"]["failed"]}
        assert files == {Path(b).name for b in broken}, backend
        assert all(f["reason"] for f in res["extra"]["failed"])


def test_plugin_rejects_unknown_model_args(trained):
    from harness.lmms_plugin import MambaMiaLMM

    _, run_dir = trained
    with pytest.raises(ValueError, match=r"unknown model_args max_frame.*allowed: .*max_frames_num"):
        MambaMiaLMM(checkpoint=str(run_dir), max_frame=8)
    with pytest.raises(ValueError, match="checkpoint changed"):
        MambaMiaLMM(checkpoint=str(run_dir), weights="0" * 16)
    with pytest.raises(ValueError, match="no time-axis aggregator"):
        MambaMiaLMM(checkpoint=str(run_dir), taa_threshold=0.5)


def test_plugin_scores_and_generates_in_process(trained):
    """The plugin's request handling (batched loglikelihood + generate_until) on real task docs."""
    from lmms_eval.api.instance import Instance

    from harness.data.synthetic import format_prompt, load_items
    from harness.lmms_plugin import MambaMiaLMM

    cfg, run_dir = trained
    lm = MambaMiaLMM(checkpoint=str(run_dir), batch_size=3)
    docs = load_items(cfg.data.suite, "test", ["count"])[:3]
    lm.task_dict = {"mia_count": {"test": docs}}

    def to_visual(doc):
        return [doc["video"]]

    def meta(i):
        return {"task": "mia_count", "doc_id": i, "repeats": 1}

    reqs = [Instance("loglikelihood", (format_prompt(d), f" {L}", to_visual, i, "mia_count", "test"), idx=k,
                     metadata=meta(i))
            for i, d in enumerate(docs) for k, L in enumerate("ABCD")]
    out = lm.loglikelihood(reqs)
    assert len(out) == 12 and all(loss > 0 for loss, _ in out)
    # the plugin's losses are the native scorer's negative log-likelihoods
    from harness.evaluate import score_native
    from harness.train import load_examples

    ex = {e.id: e for e in load_examples(cfg, "test", progress=False)[0]}
    vis = lm.model.encode_videos([ex[d["id"]].feats for d in docs])
    lp = lm.model.option_logprobs(vis, [format_prompt(d) for d in docs])
    assert [round(-x, 4) for x in lp.flatten().tolist()] == [round(loss, 4) for loss, _ in out]
    gen = [Instance("generate_until", (format_prompt(d), {"max_new_tokens": 2, "until": ["\n"]}, to_visual, i,
                                       "mia_count", "test"), idx=0, metadata=meta(i)) for i, d in enumerate(docs)]
    texts = lm.generate_until(gen)
    assert len(texts) == 3 and all(isinstance(t.text, str) for t in texts)
    # the LLM's real input length: BOS + prompt text + visual tokens (4 frames x 4 tokens)
    assert all(t.token_counts.input_tokens > 16 for t in texts)
    lm8 = MambaMiaLMM(checkpoint=str(run_dir), batch_size=3, max_frames_num=8, max_cached_videos=2)
    lm8.task_dict = lm.task_dict
    t8 = lm8.generate_until(gen)
    assert [a.token_counts.input_tokens - b.token_counts.input_tokens for a, b in zip(t8, texts)] == [16] * 3
    assert len(lm8._feats) == 2  # bounded feature memory
    preds = score_native(lm.model, [ex[d["id"]] for d in docs], mode="generate", progress=False)
    assert len(preds) == 3


def test_native_eval_records_inference_costs(trained):
    """compressor_ms / ttft_ms come with every native evaluation (the v2 latency figures read them)."""
    from harness.evaluate import evaluate_native

    cfg, run_dir = trained
    extra = evaluate_native(cfg, run_dir, progress=False)["extra"]
    assert extra["oom"] is False
    assert extra["compressor_ms"] > 0 and extra["ttft_ms"] > 0


@pytest.mark.slow
def test_real_cli_swaps_a_reducer_into_a_trained_vanilla_checkpoint(tmp_path):
    """The field's evaluation of a training-free reducer: an uncompressed LMM trained once, then scored by the
    real ``lmms-eval`` CLI with ``compressor=fastvid,visual_tokens=N`` (its token-wise maps loaded from the
    checkpoint); the plugin measures N tokens on every video, and a compressor that is not token-wise is
    refused."""
    import subprocess
    import sys

    from harness.evaluate import TASKS_DIR, find_results_json
    from harness.train import train_run

    make_suite(tmp_path / "suite", SuiteSpec(n_train=16, n_val=0, n_test=12, families=FAMS[:3], frames_long=16,
                                             frames_dense=16), workers=1, progress=False)
    cfg = build(RunConfig, {
        "data": {"suite": str(tmp_path / "suite"), "cache_dir": str(tmp_path / "cache"), "n_frames": 4},
        "model": {"compressor": {"name": "vanilla"}},
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1},
        "eval": {"tasks": ["mia_long"], "batch_size": 4},
    })
    train_run(cfg, tmp_path / "run", progress=False)
    exe = Path(sys.executable).with_name("lmms-eval")

    def cli(margs: str, out: Path) -> subprocess.CompletedProcess:
        env = {**__import__("os").environ, "MIA_SUITE_DIR": str(tmp_path / "suite"), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([str(exe), "--model", "mambamia", "--model_args", margs, "--tasks", "mia_long",
                               "--include_path", str(TASKS_DIR), "--batch_size", "4", "--output_path", str(out),
                               "--log_samples", "--limit", "4"], env=env, capture_output=True, text=True, timeout=600)

    out = tmp_path / "fastvid"
    r = cli(f"checkpoint={tmp_path / 'run'},compressor=fastvid,visual_tokens=8,output_dir={out}", out)
    assert r.returncode == 0, r.stderr[-3000:]
    raw = json.loads(find_results_json(out).read_text())
    assert 0.0 <= raw["results"]["mia_long"]["acc,none"] <= 1.0
    stats = json.loads((out / "plugin_stats.json").read_text())
    assert stats["compressor"] == "fastvid" and stats["visual_in"] == 4 * 64
    assert stats["llm_visual"] == stats["llm_visual_min"] == stats["llm_visual_max"] == 8
    assert stats["n_videos"] >= 12 - 1
    assert stats["saliency"] == ["l2_norm"]  # the tiny encoder has no attention: FastVID ranks by the norm
    bad = cli(f"checkpoint={tmp_path / 'run'},compressor=proposed,output_dir={tmp_path / 'bad'}", tmp_path / "bad")
    assert "must both be token-wise" in bad.stdout + bad.stderr
