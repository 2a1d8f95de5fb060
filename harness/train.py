"""Train one variant: ``python -m harness.train CONFIG [key=value ...]``.

CONFIG is a YAML file of RunConfig overrides (see harness/config.py) or a preset name (``tiny``,
``paper``: :data:`harness.model.presets.RUN_PRESETS`). Trailing ``key.path=value`` pairs override it
(values parsed as YAML). The same entry point runs on one CPU, one GPU, or under ``torchrun``
(DDP; FSDP for the paper preset): ``torchrun --nproc-per-node 8 -m harness.train paper ...``.

Training reads frozen-encoder features from the feature cache (the video is never decoded inside the
loop). Per optimizer step: ``grad_accum`` micro-batches of ``batch_size`` items per process, the loss
is the answer-letter cross-entropy (:meth:`VideoLMM.loss`), AdamW with linear warm-up and cosine
decay (per stage), gradient clipping, bf16 autocast on GPU.

Run directory (``--run-dir``, default ``results/runs/<config hash>``)::

    config.json          the resolved RunConfig
    checkpoint.pt        full training state (weights, optimizer, step, RNG): a killed run resumes at
                         the same step with the same data order; torch.load(weights_only=True) safe
    model/               self-contained export: config.json, tokenizer files, llm/ (transformers
                         config), model.safetensors  -> harness.evaluate / the lmms-eval plugin
    metrics.jsonl        one JSON line per logged step (loss, lr, grad norm, items/s, tokens/s)
    train_summary.json   written at the end
    failure.json         written when the loss turns NaN/inf (the run raises TrainingDiverged)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.config import (
    ConfigError,
    RunConfig,
    TrainStage,
    build,
    config_hash,
    deep_merge,
    to_dict,
)
from harness.identity import SCHEMA_KEY, SCHEMA_VERSION, migrate_config, stamp
from harness.overrides import apply_overrides, blame
from harness.store import atomic_write_text
from harness.yamlio import YamlFileError, load_yaml_file

CHECKPOINT = "checkpoint.pt"
MODEL_DIR = "model"
WEIGHTS = "model.safetensors"
CKPT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``failure.json`` in the run directory has the record."""

    def __init__(self, step: int, loss: float, run_dir: Path):
        self.step, self.loss, self.run_dir = step, loss, run_dir
        super().__init__(f"training diverged at step {step}: loss={loss} (see {run_dir / 'failure.json'})")


# ------------------------------------------------------------------------------------------ config I/O
def load_run_config(source: str, overrides: Sequence[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file or preset name plus ``key.path=value`` overrides; ConfigError names
    the file and key of anything wrong, and an override's own mistakes name the override."""
    from harness.model.presets import RUN_PRESETS

    if source in RUN_PRESETS:
        data: dict[str, Any] = json.loads(json.dumps(RUN_PRESETS[source]))
        where = f"preset {source!r}"
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"{source}: no such config file (or preset: {', '.join(RUN_PRESETS)})")
        try:
            data = load_yaml_file(p) or {}
        except YamlFileError as e:
            raise ConfigError("", str(e).removeprefix(f"{source}: "), source) from None
        if not isinstance(data, dict):
            raise ConfigError("", "the file must hold a mapping of RunConfig keys", source)
        if "preset" in data:  # `preset: tiny` + overrides in one file
            name = data.pop("preset")
            if name not in RUN_PRESETS:
                raise ConfigError("preset", f"unknown preset {name!r}; allowed: {', '.join(RUN_PRESETS)}", source)
            data = deep_merge(RUN_PRESETS[name], data)
        where = source
    apply_overrides(data, overrides)
    try:
        return build(RunConfig, data)
    except ConfigError as e:
        err = blame(e, overrides)
        raise (err if err is not e else e.with_source(where)) from None


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("results/runs") / config_hash(cfg)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to ``path`` through a temporary file and os.replace (never a half-written file)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ data
@dataclass
class Example:
    """One training/eval item with its cached features (T, P, D)."""

    id: str
    family: str
    feats: torch.Tensor
    prompt: str
    answer: str  # continuation scored / trained, e.g. " A"
    answer_index: int
    n_options: int


def load_examples(cfg: RunConfig, split: str, progress: bool = True) -> tuple[list[Example], dict[str, str]]:
    """Items of ``split`` (``data.families`` filter; ``data.max_train_items`` cap on train) with their
    features from the cache (extracted on first use). Returns the examples and ``{item_id: reason}``
    for items whose video failed (they are skipped, not fatal)."""
    from harness.data.features import ensure_features
    from harness.evaluate import format_prompt

    fs = ensure_features(cfg.data, cfg.model.encoder, [split], progress=progress)
    out = [Example(it["id"], it["family"], fs[it["id"]], format_prompt(it), " " + it["answer"],
                   int(it["answer_index"]), len(it["options"])) for it in fs.split_items(split)]
    return out, dict(fs.failed)


def suite_texts(cfg: RunConfig) -> list[str]:
    """Every prompt text of the suite (all splits present): the tiny tokenizer's vocabulary source."""
    from harness.data.synthetic import SPLITS, load_items
    from harness.evaluate import format_prompt

    texts = []
    for split in SPLITS:
        try:
            items = load_items(cfg.data.suite, split)
        except FileNotFoundError:
            continue
        texts += [format_prompt(it) + " " + it["answer"] for it in items]
    if not texts:
        raise FileNotFoundError(f"data.suite={cfg.data.suite}: no items in any split; run "
                                f"`python -m harness.data make-synthetic --out {cfg.data.suite}`")
    return texts


class DataOrder:
    """The deterministic item stream: epoch ``e`` is a permutation of all items seeded by (seed, e).
    Optimizer step ``s`` consumes stream positions ``[s*E, (s+1)*E)`` with E = batch_size * grad_accum *
    world_size; micro-batch ``a`` of rank ``r`` takes its own slice. Resuming at step s gives the same
    batches as an uninterrupted run."""

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, world_size: int = 1):
        if n == 0:
            raise ValueError("no training items (check data.suite / data.families / failed videos)")
        self.n, self.seed, self.bs, self.accum, self.world = n, seed, batch_size, grad_accum, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def batch(self, step: int, micro: int, rank: int) -> list[int]:
        start = ((step * self.accum + micro) * self.world + rank) * self.bs
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.bs)]


class SubsetOrder:
    """A stage's stream over a subset of the items (``train.stages[i].families``): a
    :class:`DataOrder` over ``indices``, counted from the stage's first step and seeded by the stage
    index, so it resumes like the full stream."""

    def __init__(self, indices: Sequence[int], first_step: int, stage: int, seed: int, batch_size: int,
                 grad_accum: int, world_size: int = 1):
        self.indices, self.first_step = list(indices), first_step
        self.order = DataOrder(len(self.indices), seed + 7919 * stage, batch_size, grad_accum, world_size)

    def batch(self, step: int, micro: int, rank: int) -> list[int]:
        return [self.indices[i] for i in self.order.batch(step - self.first_step, micro, rank)]


def stage_orders(cfg: RunConfig, stages: Sequence[TrainStage], examples: Sequence[Example],
                 world_size: int = 1) -> list[DataOrder | SubsetOrder]:
    """One item stream per stage: the run's full stream, or for a stage with ``families`` the stream of
    its items. Errors name the stage whose families have no training items."""
    from harness.data.synthetic import expand_families

    t = cfg.train
    full = DataOrder(len(examples), cfg.seed, t.batch_size, t.grad_accum, world_size)
    out: list[DataOrder | SubsetOrder] = []
    for i, st in enumerate(stages):
        if not st.families:
            out.append(full)
            continue
        want = expand_families(st.families)
        idx = [j for j, e in enumerate(examples) if e.family in want]
        if not idx:
            raise ValueError(f"train.stages[{i}].families={st.families}: no training items of these families "
                             f"(data.families={cfg.data.families or 'all'})")
        out.append(SubsetOrder(idx, st.start_step, i, cfg.seed, t.batch_size, t.grad_accum, world_size))
    return out


# ------------------------------------------------------------------------------------------ model I/O
def build_model(cfg: RunConfig, tokenizer: Any) -> nn.Module:
    from harness.model.lmm import VideoLMM
    from harness.model.presets import build_llm

    return VideoLMM(cfg.model, build_llm(cfg.model.llm, tokenizer), tokenizer)


def saved_modules(cfg: RunConfig) -> list[str]:
    """Modules whose weights a checkpoint holds: every module ever trained, and the whole LLM for the
    tiny preset (it is random, so it cannot be re-created from a hub id)."""
    mods = set()
    for st in stages_of(cfg):
        mods.update(st.train_modules)
    if cfg.model.llm.preset == "tiny":
        mods.add("llm")
    mods.update(("compressor", "projector"))
    return sorted(mods)


def module_state(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if k.split(".", 1)[0] in modules}


def metrics_upto(path: Path, step: int) -> list[str]:
    """The lines of a ``metrics.jsonl`` at or before ``step`` (what a run resumed at ``step`` keeps).
    A line that does not parse is the torn tail of a write cut by a kill: it is dropped, with a warning
    naming the file and line, since the steps it logged are trained again."""
    keep = []
    for n, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            print(f"[train] {path}:{n}: dropping a torn metrics line (the run was killed mid-write)",
                  file=sys.stderr)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(ln)
    return keep


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
    from safetensors.torch import save_file

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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Load an exported model directory (``<run_dir>/model`` or the run dir itself) for scoring."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from harness.model.lmm import VideoLMM
    from harness.model.presets import build_llm
    from harness.model.tokenizer import load_tokenizer

    p = Path(path)
    if (p / MODEL_DIR / "config.json").is_file():
        p = p / MODEL_DIR
    meta_path = p / "config.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{p}: not a trained model directory (no config.json; expected "
                                f"<run_dir>/{MODEL_DIR} written by harness.train)")
    meta = json.loads(meta_path.read_text())
    cfg = build(RunConfig, migrate_config(meta["run"], meta.get(SCHEMA_KEY)))
    tok = load_tokenizer(p)
    if cfg.model.llm.preset == "tiny":
        from transformers import AutoModelForCausalLM

        from harness.model.presets import DTYPES

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


# ------------------------------------------------------------------------------------------ schedule
def stages_of(cfg: RunConfig) -> list[TrainStage]:
    from harness.model.presets import default_train_modules

    t = cfg.train
    if t.stages:
        return list(t.stages)
    mods = list(t.train_modules) or default_train_modules(cfg.model.llm)
    return [TrainStage(start_step=0, train_modules=mods)]


def stage_index(stages: Sequence[TrainStage], step: int) -> int:
    return max(i for i, s in enumerate(stages) if s.start_step <= step)


def lr_at(cfg: RunConfig, stages: Sequence[TrainStage], step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr``, restarted at every stage."""
    i = stage_index(stages, step)
    st = stages[i]
    end = stages[i + 1].start_step if i + 1 < len(stages) else cfg.train.steps
    base = st.lr or cfg.train.lr
    warm = cfg.train.warmup_steps if st.warmup_steps < 0 else st.warmup_steps
    k, n = step - st.start_step, end - st.start_step
    if warm and k < warm:
        return base * (k + 1) / warm
    frac = (k - warm) / max(1, n - warm)
    lo = cfg.train.min_lr_ratio
    return base * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


# ------------------------------------------------------------------------------------------ trainer
def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class Trainer:
    """Trains ``cfg`` into ``run_dir``; :meth:`run` returns the summary dict. Under torchrun (or with
    RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set) it joins the process group (nccl on GPU, gloo on CPU)
    and wraps the model in DDP (FSDP for the paper preset or ``train.parallel: fsdp``)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, progress: bool = True, device: str | None = None):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.rank, self.world, self.local_rank = _dist_env()
        if device is None:  # one GPU per local rank; a task that sees one GPU (Slurm binding) uses it
            n_gpu = torch.cuda.device_count()
            device = f"cuda:{self.local_rank if self.local_rank < n_gpu else 0}" if n_gpu else "cpu"
        self.device = torch.device(device)
        self.is_main = self.rank == 0
        self.model: nn.Module | None = None

    # ---------------------------------------------------------------- setup
    def _init_dist(self) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world)

    def _tokenizer(self):
        from harness.model.tokenizer import build_word_tokenizer, load_tokenizer

        llm = self.cfg.model.llm
        if llm.preset != "tiny":
            return load_tokenizer(llm.tokenizer or llm.name_or_path)
        tok_dir = self.run_dir / MODEL_DIR
        if (tok_dir / "tokenizer.json").is_file():  # resume: the same vocabulary
            return load_tokenizer(tok_dir)
        return build_word_tokenizer(suite_texts(self.cfg))

    def _parallel(self) -> str:
        p = self.cfg.train.parallel
        if p == "auto":
            p = "fsdp" if self.cfg.model.llm.preset == "paper" else "ddp"
        return p

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        if self._parallel() == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if self._amp() else None)
            for layer in getattr(model.llm.get_decoder(), "layers", []):
                fully_shard(layer, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    def _amp(self) -> bool:
        return self.cfg.train.bf16 and self.device.type == "cuda"

    # ---------------------------------------------------------------- checkpoint
    def _state(self, model: nn.Module, opt: torch.optim.Optimizer, step: int, stage: int) -> dict[str, Any]:
        if self._parallel() == "fsdp" and self.world > 1:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            o = StateDictOptions(full_state_dict=True, cpu_offload=True)
            msd = get_model_state_dict(model, options=o)
            osd = get_optimizer_state_dict(model, opt, options=o)
        else:
            msd = self._unwrapped.state_dict()  # no DDP "module." prefix
            osd = opt.state_dict()
        mods = saved_modules(self.cfg)
        msd = {k: v.detach().cpu() for k, v in msd.items() if k.split(".", 1)[0] in mods}
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"format": CKPT_FORMAT, "step": step, "stage": stage, "model": msd, "optimizer": osd,
                "rng": rng, "config_hash": config_hash(self.cfg), "world_size": self.world}

    def _save(self, model: nn.Module, opt, step: int, stage: int) -> None:
        state = self._state(model, opt, step, stage)  # collective under FSDP: every rank calls it
        if self.is_main:
            atomic_torch_save(state, self.run_dir / CHECKPOINT)
            export_model(self._unwrapped, self.cfg, self.run_dir / MODEL_DIR, step, state=state["model"])
        if self.world > 1:
            dist.barrier()

    def _load(self) -> dict[str, Any] | None:
        p = self.run_dir / CHECKPOINT
        if not p.is_file():
            return None
        state = torch.load(p, map_location="cpu", weights_only=True)
        if state.get("config_hash") != config_hash(self.cfg):
            raise ValueError(f"{p}: checkpoint belongs to config {state.get('config_hash')}, not "
                             f"{config_hash(self.cfg)}; use another --run-dir")
        return state

    # ---------------------------------------------------------------- loop
    def _set_trainable(self, stage: TrainStage) -> None:
        for name, mod in self._unwrapped.submodules().items():
            for p in mod.parameters():
                p.requires_grad_(name in stage.train_modules)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.cfg.train.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.cfg.train.lr, betas=(0.9, 0.999))

    def _write_failure(self, step: int, loss: float) -> None:
        rec = {"error": "TrainingDiverged", "step": step, "loss": str(loss), "time": time.time(),
               "message": f"loss became {loss} at optimizer step {step}; the last good checkpoint is "
                          f"{self.run_dir / CHECKPOINT} (if any). Lower train.lr or check the data.",
               "config_hash": config_hash(self.cfg)}
        atomic_write_text(self.run_dir / "failure.json", json.dumps(rec, indent=2))

    def run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        self._init_dist()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(stamp(to_dict(cfg)), indent=2))
            (self.run_dir / "failure.json").unlink(missing_ok=True)
        torch.manual_seed(cfg.seed)
        examples, failed = load_examples(cfg, "train", progress=self.progress and self.is_main)
        tokenizer = self._tokenizer()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every (re)start
        model = build_model(cfg, tokenizer).to(self.device)
        self._unwrapped = model
        self.model = model
        stages = stages_of(cfg)
        state = self._load()
        start = 0
        if state is not None:
            missing, unexpected = model.load_state_dict(state["model"], strict=False)
            if unexpected:
                raise ValueError(f"{self.run_dir / CHECKPOINT}: unexpected keys {unexpected[:5]}")
            start = int(state["step"])
        orders = stage_orders(cfg, stages, examples, self.world)
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.is_main and metrics_path.exists():
            atomic_write_text(metrics_path, "".join(ln + "\n" for ln in metrics_upto(metrics_path, start)))

        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=start, desc=f"train {self.run_dir.name}", unit="step",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True)
        stage_i, wrapped, opt = -1, model, None
        t0, items_seen, tokens_seen, win_t, win_items, win_tokens = time.time(), 0, 0, time.time(), 0, 0
        last_loss = float("nan")
        T, P = examples[0].feats.shape[:2]
        n_visual = model.count_visual_tokens(T, P)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self._amp() else nullcontext()
        for step in range(start, t.steps):
            si = stage_index(stages, step)
            if si != stage_i:
                self._set_trainable(stages[si])
                if wrapped is model or self._parallel() != "fsdp":  # FSDP shards once; DDP re-wraps
                    wrapped = None  # drop the old DDP (and its gradient hooks) before re-wrapping
                    wrapped = self._wrap(model)
                # collected after wrapping: fully_shard replaces the parameters with sharded ones
                opt = self._optimizer([p for p in model.parameters() if p.requires_grad])
                if state is not None and state["stage"] == si and step == start:
                    if self._parallel() == "fsdp" and self.world > 1:
                        from torch.distributed.checkpoint.state_dict import (
                            StateDictOptions,
                            set_optimizer_state_dict,
                        )

                        set_optimizer_state_dict(wrapped, opt, state["optimizer"],
                                                 options=StateDictOptions(full_state_dict=True))
                    else:
                        opt.load_state_dict(state["optimizer"])
                    torch.set_rng_state(state["rng"]["cpu"])
                    if "cuda" in state["rng"] and self.device.type == "cuda":
                        torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
                stage_i = si
            lr = lr_at(cfg, stages, step)
            for g in opt.param_groups:
                g["lr"] = lr
            wrapped.train()
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(t.grad_accum):
                batch = [examples[i] for i in orders[si].batch(step, micro, self.rank)]
                feats = torch.stack([b.feats for b in batch]).to(self.device, torch.float32)
                sync = (micro == t.grad_accum - 1 or self.world == 1 or not hasattr(wrapped, "no_sync"))
                ctx = nullcontext() if sync else wrapped.no_sync()
                with ctx, amp:
                    loss = compute_loss(wrapped, feats, [b.prompt for b in batch], [b.answer for b in batch])
                    (loss / t.grad_accum).backward()
                loss_sum += loss.detach().float() / t.grad_accum
                items_seen += len(batch)
                win_items += len(batch)
                n_tok = sum(n_visual + len(model.text_ids(b.prompt)) + 2 for b in batch)
                tokens_seen += n_tok
                win_tokens += n_tok
            if self.world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= self.world
            last_loss = float(loss_sum)
            if not math.isfinite(last_loss):
                bar.close()
                if self.is_main:
                    self._write_failure(step, last_loss)
                raise TrainingDiverged(step, last_loss, self.run_dir)
            gnorm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                                   t.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.update(1)
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                dt = max(1e-9, time.time() - win_t)
                rec = {"step": done, "loss": round(last_loss, 6), "lr": lr, "grad_norm": float(gnorm),
                       "items_per_s": win_items * self.world / dt, "tokens_per_s": win_tokens * self.world / dt,
                       "elapsed_s": time.time() - t0, "stage": si}
                bar.set_postfix(loss=f"{last_loss:.3f}", it_s=f"{rec['items_per_s']:.1f}")
                if self.is_main:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                win_t, win_items, win_tokens = time.time(), 0, 0
            if done % t.checkpoint_every == 0 or done == t.steps:
                self._save(wrapped, opt, done, si)
        bar.close()
        if start >= t.steps and self.is_main and not (self.run_dir / MODEL_DIR / WEIGHTS).is_file():
            export_model(model, cfg, self.run_dir / MODEL_DIR, start)
        elapsed = time.time() - t0
        summary = {"steps": t.steps, "resumed_from": start, "final_loss": last_loss,
                   "train_time_s": elapsed, "items_per_s": items_seen * self.world / max(elapsed, 1e-9),
                   "n_train_items": len(examples), "n_failed_videos": len(failed),
                   "visual_tokens_per_item": n_visual, "world_size": self.world,
                   "params": {k: sum(p.numel() for p in m.parameters()) for k, m in model.submodules().items()},
                   "trained_modules": sorted({m for s in stages for m in s.train_modules}),
                   "run_dir": str(self.run_dir), "config_hash": config_hash(cfg)}
        if self.is_main:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
        return summary


def compute_loss(model: nn.Module, feats: torch.Tensor, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """One micro-batch's loss through the (possibly DDP/FSDP-wrapped) model's forward."""
    return model(feats, prompts, answers)


def train_run(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if present). Raises
    :class:`TrainingDiverged` on a NaN/inf loss. Returns the summary (also in train_summary.json)."""
    return Trainer(cfg, run_dir, progress=progress).run()


# ------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.train",
        description="Train one MambaMia LMM variant from cached encoder features.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m harness.data make-synthetic --out results/data/mia_synthetic\n"
               "  python -m harness.train tiny --run-dir results/runs/tiny_bi_ssm\n"
               "  python -m harness.train tiny model.compressor.block=transformer train.steps=200\n"
               "  python -m harness.train my_variant.yaml --eval        # train, then score natively\n"
               "  torchrun --nproc-per-node 2 -m harness.train tiny     # DDP (gloo on CPU)\n"
               "A killed run resumes from <run-dir>/checkpoint.pt when started again with the same config.",
    )
    ap.add_argument("config", help="YAML file of RunConfig overrides, or a preset name (tiny, paper)")
    ap.add_argument("overrides", nargs="*", help="key.path=value overrides (YAML values), e.g. train.steps=100")
    ap.add_argument("--run-dir", default=None, help="output directory (default results/runs/<config hash>)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    ap.add_argument("--eval", action="store_true", help="score the trained model (harness.evaluate) after")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_intermixed_args(argv)  # overrides may follow options: CONFIG --threads 2 train.steps=60
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_run_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    try:
        summary = Trainer(cfg, run_dir, progress=not args.no_progress, device=args.device).run()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    rank = _dist_env()[0]
    if rank == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "train_time_s", "items_per_s",
                                                   "run_dir")}, indent=2))
    if args.eval and rank == 0:
        from harness.evaluate import evaluate_run, format_metrics

        res = evaluate_run(cfg, run_dir, progress=not args.no_progress)
        print(format_metrics(res))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
