"""A run's model on disk: build it, export the self-contained ``<run_dir>/model`` folder, load it back.

``export_model`` writes ``config.json`` (the run config), the tokenizer (with its chat template), the
LLM's transformers config under ``llm/`` and ``model.safetensors`` (the weights of every module a
checkpoint keeps: :func:`saved_modules`), each file whole (:func:`save_pretrained_atomic`). ``load_model``
is what ``harness.evaluate`` and the lmms-eval plugin use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from harness.config import RunConfig, build, config_hash, to_dict
from harness.identity import SCHEMA_KEY, SCHEMA_VERSION, migrate_config
from harness.model.lmm import VideoLMM
from harness.model.presets import DTYPES, build_llm
from harness.model.registry import CompressorConfigBase
from harness.model.tokenizer import load_tokenizer
from harness.store import atomic_write_text
from harness.train_schedule import stages_of

MODEL_DIR = "model"
WEIGHTS = "model.safetensors"
CKPT_FORMAT = 1


def build_model(cfg: RunConfig, tokenizer: Any) -> nn.Module:
    return VideoLMM(cfg.model, build_llm(cfg.model.llm, tokenizer), tokenizer)


def saved_modules(cfg: RunConfig) -> list[str]:
    """Modules whose weights a checkpoint holds: every module ever trained, and the whole LLM for the
    tiny preset (it is random, so it cannot be re-created from a hub id)."""
    mods = set()
    for st in stages_of(cfg):
        mods.update(st.train_modules)
    if cfg.model.llm.preset == "tiny" or cfg.model.llm.random_init:  # random: not re-creatable
        mods.add("llm")
    mods.update(("compressor", "projector"))
    return sorted(mods)


def module_state(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if k.split(".", 1)[0] in modules}


def save_pretrained_atomic(obj: Any, out_dir: Path) -> None:
    """``obj.save_pretrained(out_dir)`` where every file lands whole: transformers truncates and
    rewrites in place, so a job killed mid-checkpoint (Slurm scancel, preemption) would leave an empty
    ``tokenizer.json`` that the resumed run then fails to read. Written to a sibling temp folder, each
    file is then ``os.replace``'d into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.export.*"):  # left by a SIGKILL; one writer per run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export."))
    try:
        obj.save_pretrained(str(tmp))
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                dest = out_dir / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(model: nn.Module, cfg: RunConfig, out_dir: Path, step: int,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the self-contained model directory (config, tokenizer, LLM config, safetensors).
    ``state``: an already gathered full state dict (FSDP); default: the model's own."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mods = saved_modules(cfg)
    if state is None:
        state = module_state(model, mods)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items() if k.split(".", 1)[0] in mods}
    # tied weights (tiny LLM: lm_head = embeddings) are stored once
    seen: dict[int, str] = {}
    for k in list(state):
        ptr = state[k].untyped_storage().data_ptr()
        if ptr in seen:
            del state[k]
        else:
            seen[ptr] = k
    tmp = out_dir / (WEIGHTS + f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, out_dir / WEIGHTS)
    save_pretrained_atomic(model.tokenizer, out_dir)
    save_pretrained_atomic(model.llm.config, out_dir / "llm")
    meta = {"format": CKPT_FORMAT, "step": step, "modules": mods, "run": to_dict(cfg),
            "config_hash": config_hash(cfg), SCHEMA_KEY: SCHEMA_VERSION}
    atomic_write_text(out_dir / "config.json", json.dumps(meta, indent=2))


def load_model(path: str | Path, device: str | torch.device = "cpu",
               compressor: CompressorConfigBase | None = None) -> tuple[nn.Module, RunConfig]:
    """Load an exported model directory (``<run_dir>/model`` or the run dir itself) for scoring.
    ``compressor``: swap this compressor in at test time (an evaluation-only run: a training-free reducer
    onto an uncompressed LMM); it must be token-wise like the checkpoint's, whose maps it loads. The
    returned config has it in place."""
    p, meta, cfg = checkpoint_config(path)
    if compressor is not None:
        cfg = swap_compressor(cfg, compressor, str(p))
    tok = load_tokenizer(p)
    if cfg.model.llm.preset == "tiny":
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(p / "llm")),
                                               dtype=DTYPES[cfg.model.llm.dtype],
                                               attn_implementation=cfg.model.llm.attn_implementation)
    else:
        llm = build_llm(cfg.model.llm, tok)
    model = VideoLMM(cfg.model, llm, tok)
    state = load_file(str(p / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{p / WEIGHTS}: unexpected weights {unexpected[:5]}")
    saved = set(meta["modules"])
    tied = {"llm.lm_head.weight"} if getattr(llm.config, "tie_word_embeddings", False) else set()
    bad = [k for k in missing if k.split(".", 1)[0] in saved and k not in tied]
    if bad:
        raise ValueError(f"{p / WEIGHTS}: missing weights {bad[:5]}")
    model.to(device).eval()
    return model, cfg


def checkpoint_config(path: str | Path) -> tuple[Path, dict[str, Any], RunConfig]:
    """(model dir, its config.json, the RunConfig it was trained with) of an exported model directory."""
    p = Path(path)
    if (p / MODEL_DIR / "config.json").is_file():
        p = p / MODEL_DIR
    meta_path = p / "config.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{p}: not a trained model directory (no config.json; expected "
                                f"<run_dir>/{MODEL_DIR} written by harness.train)")
    meta = json.loads(meta_path.read_text())
    return p, meta, build(RunConfig, migrate_config(meta["run"], meta.get(SCHEMA_KEY)))


def swap_compressor(cfg: RunConfig, compressor: CompressorConfigBase, where: str) -> RunConfig:
    """``cfg`` with ``compressor`` in place of its own, checked to load the checkpoint's compressor weights."""
    own = cfg.model.compressor
    if not (own.tokenwise and compressor.tokenwise):
        raise ValueError(f"{where}: the checkpoint's compressor {own.name!r} and {compressor.name!r} must both be "
                         "token-wise (vanilla, or a training-free reducer) for one to replace the other")
    if (own.d_in, own.d_model, own.d_out) != (compressor.d_in, compressor.d_model, compressor.d_out):
        raise ValueError(f"{where}: the checkpoint's compressor has widths d_in/d_model/d_out = "
                         f"{own.d_in}/{own.d_model}/{own.d_out}, {compressor.name!r} "
                         f"{compressor.d_in}/{compressor.d_model}/{compressor.d_out}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, compressor=compressor))


def model_dir(checkpoint: str | os.PathLike) -> Path:
    """``<run>/model`` when ``checkpoint`` is a run dir, else ``checkpoint`` itself."""
    p = Path(checkpoint)
    return p / "model" if (p / "model" / "config.json").is_file() else p


def weights_hash(checkpoint: str | os.PathLike, n: int = 16) -> str:
    """sha256 over every file of the exported model (relative path + bytes), first ``n`` hex digits.
    Memoised in ``<model>/.weights_hash.json`` keyed by each file's size and mtime, so a 15 GB checkpoint
    is read once, and again only when a file changes."""
    root = model_dir(checkpoint)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no exported model directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    stamp = [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo = root / ".weights_hash.json"
    try:
        old = json.loads(memo.read_text())
        if old.get("files") == stamp:
            return str(old["sha256"])[:n]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):  # a read-only checkpoint: just recompute next time
        atomic_write_text(memo, json.dumps({"files": stamp, "sha256": digest}))
    return digest[:n]
