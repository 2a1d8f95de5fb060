"""Issue 30: the paper-scale step's training code (no host syncs, fused AdamW, pinned copies, visual room
checked at set-up, loader shut down on error) and benchmarks/gpu_paper_step.py at toy sizes on the CPU.
The GPU-only paths (fused AdamW, pinned non-blocking copies) are checked where CUDA is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness.train as train_mod
from harness.config import ConfigError, RunConfig, build
from harness.data.synthetic import SuiteSpec, make_suite
from harness.train import Trainer, train_run
from harness.train_inputs import PinnedFeatureSource, close_loader

ROOT = Path(__file__).resolve().parents[1]
FAST_MODEL = {"compressor": {"block": "conv", "spatial": {"period": 16, "n_layers": 1}}}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    make_suite(root / "suite", SuiteSpec(n_train=16, n_val=0, n_test=8, frames_long=16, frames_dense=16),
               workers=1, progress=False)
    return root


def _cfg(root: Path, model: dict | None = None, **data) -> RunConfig:
    return build(RunConfig, {
        "data": {"suite": str(root / "suite"), "cache_dir": str(root / "cache"), "n_frames": 4, **data},
        "model": model or FAST_MODEL,
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 2},
    })


def test_visual_tokens_beyond_max_length_fail_at_setup(suite, tmp_path):
    """The uncompressed arm whose visual tokens alone exceed the row limit stops before any step (it used
    to drop every item as too long and die on an empty batch, hidden behind a worker-killed message)."""
    cfg = _cfg(suite, {"compressor": {"enabled": False}}, max_length=32)
    with pytest.raises(ConfigError, match="data.max_length.*visual tokens per video"):
        train_run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_steps_do_not_read_the_loss_back_each_step(suite, tmp_path, monkeypatch):
    """Losses stay on the device between log windows: one read-back per window, not per step."""
    reads = {"n": 0}
    real = Trainer._read_back

    def counted(losses):
        reads["n"] += 1
        return real(losses)

    monkeypatch.setattr(Trainer, "_read_back", staticmethod(counted))
    summary = train_run(_cfg(suite), tmp_path / "run", progress=False)
    assert summary["steps"] == 3
    assert reads["n"] == 2  # log_every=2: steps 2 and 3 (the last)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 3] and all(r["loss"] == r["loss"] for r in recs)


def test_loader_workers_stopped_when_a_step_fails(suite, tmp_path, monkeypatch):
    seen = {}
    real = train_mod.close_loader

    def spy(it):
        seen["it"] = it
        real(it)

    def boom(*a, **k):
        raise RuntimeError("the real error")

    monkeypatch.setattr(train_mod, "close_loader", spy)
    monkeypatch.setattr(train_mod, "compute_loss", boom)
    cfg = _cfg(suite, workers=1)
    with pytest.raises(RuntimeError, match="the real error"):
        train_run(cfg, tmp_path / "run", progress=False)
    it = seen["it"]
    assert it is not None and getattr(it, "_shutdown", True)
    close_loader(None)  # a no-op


def test_adamw_impl_by_device(tmp_path):
    cfg = build(RunConfig, {})
    cpu = Trainer(cfg, tmp_path, progress=False, device="cpu")
    assert cpu._adamw_impl([torch.nn.Parameter(torch.zeros(2))]) == {}
    if not torch.cuda.is_available():
        pytest.skip("fused AdamW is the CUDA path; no CUDA here")
    gpu = Trainer(cfg, tmp_path, progress=False, device="cuda")
    p = torch.nn.Parameter(torch.zeros(2, device="cuda"))
    assert gpu._adamw_impl([p]) == {"fused": True}
    opt = gpu._optimizer([p])
    assert opt.defaults.get("fused") is True


def test_pinned_feature_source_copies_non_blocking():
    if not torch.cuda.is_available():
        pytest.skip("pinned non-blocking host-to-device copies need CUDA; none here")

    class Enc:
        def encode_on_device(self, frames, dtype):
            assert frames.is_cuda
            return frames.float().mean(-1).flatten(1)[:, :, None].to(dtype)

    src = PinnedFeatureSource(Enc(), torch.device("cuda"), bf16=True)
    frames = torch.randint(0, 255, (2, 4, 4, 3), dtype=torch.uint8)
    out = src.features([{"feats": None, "frames": frames, "key": None}])
    assert out.is_cuda and out.shape[0] == 1


def test_paper_step_benchmark_tiny(tmp_path):
    out = tmp_path / "ratio.json"
    r = subprocess.run([sys.executable, "benchmarks/gpu_paper_step.py", "--tiny", "--out", str(out), "--runs",
                        "vanilla:7b:s1:f8:b1:ac", "proposed:7b:s1:f8:b1", "proposed_all:7b:s2:f8:b1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {x["run"]: x for x in doc["rows"]}
    assert set(rows) == {"vanilla:tiny:s1:f8:b1:ac", "proposed:tiny:s1:f8:b1", "proposed_all:tiny:s2:f8:b1"}
    v, p = rows["vanilla:tiny:s1:f8:b1:ac"], rows["proposed:tiny:s1:f8:b1"]
    assert v["visual_tokens_per_item"] == 8 * 16 and p["visual_tokens_per_item"] <= 8 * 4
    assert all(x["losses_finite"] and x["step_s"] > 0 for x in rows.values())
    (ratio,) = [x for x in doc["ratios"] if x["proposed"] == "proposed:tiny:s1:f8:b1"]
    assert ratio["step_time_ratio"] == pytest.approx(v["step_s"] / p["step_s"], rel=0.01)
    assert ratio["paper_ratio"] == pytest.approx(12.83, abs=0.01)
