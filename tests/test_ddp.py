"""DDP and FSDP from the same entry point: two CPU processes (gloo) train a few steps and end identical."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from harness.config import RunConfig, build
from harness.data.synthetic import SuiteSpec, make_suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(root: Path, parallel: str = "ddp") -> RunConfig:
    return build(RunConfig, {
        "data": {"suite": str(root / "suite"), "cache_dir": str(root / "cache"), "n_frames": 4},
        "model": {"compressor": {"block": "conv", "spatial": {"period": 16, "n_layers": 1}}},
        "train": {"steps": 3, "batch_size": 2, "grad_accum": 2, "warmup_steps": 1, "checkpoint_every": 3,
                  "log_every": 1, "parallel": parallel},
    })


def _worker(rank: int, world: int, port: int, root: str, parallel: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from harness.train import Trainer

    tr = Trainer(_cfg(Path(root), parallel), Path(root) / "run", progress=False, device="cpu")
    summary = tr.run()
    h = hashlib.sha256()
    for k, v in sorted(tr.model.state_dict().items()):
        if hasattr(v, "full_tensor"):  # FSDP: a sharded DTensor; every rank gathers the whole tensor
            v = v.full_tensor()
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    Path(root, f"rank{rank}.json").write_text(json.dumps({"hash": h.hexdigest(), "world": summary["world_size"]}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_stay_identical(tmp_path, parallel):
    make_suite(tmp_path / "suite", SuiteSpec(n_train=24, n_val=0, n_test=0, frames_long=16, frames_dense=16),
               workers=1, progress=False)
    from harness.data.features import ensure_features

    cfg = _cfg(tmp_path, parallel)
    ensure_features(cfg.data, cfg.model.encoder, ["train"], progress=False)  # filled once, read by both ranks
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), parallel), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    assert r0["hash"] == r1["hash"]
    # rank 0 wrote the checkpoint; its weights moved away from the (seeded) initial ones
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2
    from harness.model.tokenizer import load_tokenizer
    from harness.train import build_model

    torch.manual_seed(cfg.seed)
    init = build_model(cfg, load_tokenizer(tmp_path / "run" / "model")).state_dict()
    key = "projector.net.0.weight"
    assert not torch.equal(init[key], state["model"][key])
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
