"""Training loop: stages and schedule, exact resume after a kill, NaN stop, CLI, trained > untrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import harness.train as train_mod
from harness.config import ConfigError, RunConfig, build
from harness.data.synthetic import SuiteSpec, make_suite
from harness.train import (
    DataOrder,
    Trainer,
    TrainingDiverged,
    load_model,
    load_run_config,
    lr_at,
    main,
    stages_of,
    train_run,
)

FAST_MODEL = {"compressor": {"block": "conv", "spatial": {"period": 16, "n_layers": 1}}}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    make_suite(root / "suite", SuiteSpec(n_train=48, n_val=0, n_test=24, frames_long=16, frames_dense=16),
               workers=1, progress=False)
    return root


def _cfg(root: Path, **train) -> RunConfig:
    return build(RunConfig, {
        "data": {"suite": str(root / "suite"), "cache_dir": str(root / "cache"), "n_frames": 4},
        "model": FAST_MODEL,
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 3, "log_every": 1,
                  **train},
    })


def test_stages_and_schedule():
    cfg = build(RunConfig, {"train": {"steps": 100, "lr": 1e-3, "warmup_steps": 10, "min_lr_ratio": 0.1,
                                      "stages": [{"start_step": 0, "train_modules": ["compressor", "projector"]},
                                                 {"start_step": 50, "train_modules": ["llm"], "lr": 1e-4,
                                                  "warmup_steps": 0}]}})
    st = stages_of(cfg)
    assert [s.train_modules for s in st] == [["compressor", "projector"], ["llm"]]
    assert lr_at(cfg, st, 0) == pytest.approx(1e-4)  # warm-up 1/10
    assert lr_at(cfg, st, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, st, 49) == pytest.approx(1e-4, rel=0.05)  # cosine end of stage 1
    assert lr_at(cfg, st, 50) == pytest.approx(1e-4)  # stage 2 restarts at its own lr, no warm-up
    # defaults: tiny trains everything, paper stage 1 trains compressor + projector
    assert stages_of(build(RunConfig, {}))[0].train_modules == ["compressor", "projector", "llm"]
    paper = build(RunConfig, {"model": {"llm": {"preset": "paper", "random_init": True}}})
    assert stages_of(paper)[0].train_modules == ["compressor", "projector"]
    with pytest.raises(ConfigError, match="stages\\[1\\].start_step"):
        build(RunConfig, {"train": {"steps": 10, "stages": [{"start_step": 0}, {"start_step": 10}]}})
    # start_frac scales with train.steps
    frac = [{"start_step": 0}, {"start_frac": 0.5}]
    assert [s.start_step for s in build(RunConfig, {"train": {"steps": 200, "stages": frac}}).train.stages] == [0, 100]
    assert [s.start_step for s in build(RunConfig, {"train": {"steps": 3, "stages": frac}}).train.stages] == [0, 2]
    with pytest.raises(ConfigError, match="stages\\[1\\].start_frac"):
        build(RunConfig, {"train": {"steps": 10, "stages": [{"start_step": 0}, {"start_frac": 1.5}]}})


def test_data_order_is_a_function_of_the_step():
    a = DataOrder(10, seed=3, batch_size=4, grad_accum=2, world_size=2)
    seen = [i for s in range(5) for m in range(2) for r in range(2) for i in a.batch(s, m, r)]
    assert sorted(seen[:10]) == list(range(10))  # each epoch is a permutation
    b = DataOrder(10, seed=3, batch_size=4, grad_accum=2, world_size=2)
    assert b.batch(4, 1, 1) == a.batch(4, 1, 1)
    assert DataOrder(10, seed=4, batch_size=4, grad_accum=1).batch(0, 0, 0) != a.batch(0, 0, 0)


CURRICULUM = [{"start_step": 0, "families": ["colour"], "train_modules": ["compressor", "projector", "llm"]},
              {"start_step": 2, "train_modules": ["compressor", "projector", "llm"]}]


@pytest.mark.parametrize("stages", [[], CURRICULUM], ids=["one_stage", "curriculum"])
def test_resume_after_kill_is_exact(suite, tmp_path, monkeypatch, stages):
    cfg = _cfg(suite, stages=stages)
    train_run(cfg, tmp_path / "full", progress=False)

    calls = {"n": 0}
    real = train_mod.compute_loss

    def dies_after_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # grad_accum 1: one call per step; the checkpoint at step 3 is on disk
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", dies_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "killed", progress=False)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(train_mod, "compute_loss", real)
    summary = train_run(cfg, tmp_path / "killed", progress=False)
    assert summary["resumed_from"] == 3
    full = load_file(tmp_path / "full" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # a finished run started again does nothing and keeps its weights
    assert train_run(cfg, tmp_path / "killed", progress=False)["resumed_from"] == 6


def test_kill_mid_write_leaves_a_resumable_run(suite, tmp_path, monkeypatch):
    """Slurm's scancel / preemption can land while a checkpoint's model folder or a metrics line is
    being written: the resumed run must still start (a torn file is never what it reads)."""
    from harness.model.tokenizer import build_word_tokenizer

    cfg, run = _cfg(suite), tmp_path / "run"
    tok_cls = type(build_word_tokenizer(["a b"]))
    real = tok_cls.save_pretrained
    calls = {"n": 0}

    def killed_mid_write(self, save_directory, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-6 export: killed with tokenizer.json truncated to nothing
            (Path(save_directory) / "tokenizer.json").write_text("")
            raise KeyboardInterrupt("killed")
        return real(self, save_directory, *a, **k)

    monkeypatch.setattr(tok_cls, "save_pretrained", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, run, progress=False)
    monkeypatch.setattr(tok_cls, "save_pretrained", real)
    assert json.loads((run / "model" / "tokenizer.json").read_text())  # still the step-3 file, whole
    assert not list(run.glob(".model.export.*")), "the export's temp folder is cleaned up"
    with open(run / "metrics.jsonl", "a") as fh:  # and a metrics line cut mid-write
        fh.write('{"step": 7, "lo')
    assert train_run(cfg, run, progress=False)["resumed_from"] == 6
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    load_model(run)


def test_curriculum_stage_trains_only_its_families(suite, tmp_path, monkeypatch):
    real = train_mod.compute_loss
    seen: list[list[str]] = []

    def record(model, feats, items):
        seen.append([it["group"] for it in items])
        return real(model, feats, items)

    monkeypatch.setattr(train_mod, "compute_loss", record)
    train_run(_cfg(suite, stages=CURRICULUM, batch_size=8), tmp_path / "run", progress=False)
    assert len(seen) == 6
    assert all(g == "colour" for step in seen[:2] for g in step)  # stage 1: colour only
    later = {g for step in seen[2:] for g in step}
    assert len(later) > 2, later  # stage 2: the whole suite again
    with pytest.raises(ConfigError, match="stages\\[0\\].families\\[0\\]"):
        _cfg(suite, stages=[{"start_step": 0, "families": ["colr"]}])
    bad = _cfg(suite, stages=[{"start_step": 0, "families": ["colour"]}])
    bad.data.families = ["long"]
    with pytest.raises(ValueError, match="train.stages\\[0\\].families"):
        train_run(bad, tmp_path / "bad", progress=False)


def test_nan_loss_stops_with_failure_record(suite, tmp_path, monkeypatch):
    real = train_mod.compute_loss
    calls = {"n": 0}

    def nan_at_step_2(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_mod, "compute_loss", nan_at_step_2)
    with pytest.raises(TrainingDiverged, match="step 1"):
        train_run(_cfg(suite), tmp_path / "run", progress=False)
    rec = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert rec["error"] == "TrainingDiverged" and rec["step"] == 1 and rec["loss"] == "nan"


def test_cli_overrides_errors_and_model_dir(suite, tmp_path, capsys):
    over = [f"data.suite={suite / 'suite'}", f"data.cache_dir={suite / 'cache'}", "data.n_frames=4",
            "model.compressor.block=conv", "model.compressor.spatial.n_layers=1", "train.steps=2",
            "train.lr=2e-3", "train.batch_size=2"]
    assert load_run_config("tiny", over).train.lr == 2e-3
    assert main(["tiny", *over, "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    model, cfg = load_model(tmp_path / "r")
    assert cfg.train.steps == 2 and model.tokenizer.eos_token_id is not None
    for f in ("config.json", "tokenizer.json", "model.safetensors", "llm/config.json"):
        assert (tmp_path / "r" / "model" / f).is_file(), f
    assert main(["tiny", "train.stepz=3"]) == 2
    assert "train.stepz" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml")]) == 2


def test_trainer_device_default():
    assert Trainer(build(RunConfig, {}), "/tmp/x", progress=False).device.type in ("cpu", "cuda")
