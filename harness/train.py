"""Train one variant: ``python -m harness.train CONFIG [key=value ...]``.

CONFIG is a YAML file of RunConfig overrides (see harness/config.py) or a preset name (``tiny``,
``paper``: :data:`harness.model.presets.RUN_PRESETS`). Trailing ``key.path=value`` pairs override it
(values parsed as YAML). The same entry point runs on one CPU, one GPU, or under ``torchrun``
(DDP; FSDP for the paper preset): ``torchrun --nproc-per-node 8 -m harness.train paper ...``.

Training streams its dataset (``data.dataset``: the synthetic suite or LLaVA-style conversation records,
:mod:`harness.data.datasets`) through a DataLoader whose workers decode only the sampled frames; the
frozen encoder runs on the training device (bf16 on GPU), or its features come from the on-disk cache
(``data.feature_cache``; on by default for the synthetic suite). Per optimizer step: ``grad_accum``
micro-batches of ``batch_size`` items per process; the loss is next-token cross-entropy on the
assistant turns only (:mod:`harness.data.conversation`: the tokenizer's chat template, or the plain
prompt + `` A`` format of the synthetic suite); AdamW over fp32 master weights, linear warm-up and
cosine decay per stage, gradient clipping, bf16 autocast on GPU (FSDP2: bf16 params, fp32 reduce).
Bad items (missing / damaged videos, malformed records, too long) are skipped and counted in the
summary; past ``data.max_failure_rate`` the run stops (:class:`DataFailureError`, ``failure.json``).
Set-up order fails cheapest first (:mod:`harness.train_inputs`).

Run directory (``--run-dir``, default ``results/runs/<config hash>``)::

    config.json          the resolved RunConfig
    checkpoint.pt        full training state (weights, optimizer, step, RNG): a killed run resumes at
                         the same step with the same data order; torch.load(weights_only=True) safe
    model/               self-contained export: config.json, tokenizer files, llm/ (transformers
                         config), model.safetensors  -> harness.evaluate / the lmms-eval plugin
    metrics.jsonl        one JSON line per logged step (loss, lr, grad norm, items/s, tokens/s, tokens
                         seen); also sent to the trackers of ``train.report_to`` (harness.trackers)
    train_summary.json   written at the end
    failed_items.jsonl   every item that failed to load, with its reason
    failure.json         written when the loss turns NaN/inf (TrainingDiverged) or too many items fail
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from harness import trackers
from harness.config import (
    ConfigError,
    RunConfig,
    TrainStage,
    build,
    config_hash,
    deep_merge,
    to_dict,
)
from harness.data.datasets import get_dataset
from harness.data.examples import Example, load_examples, suite_texts  # noqa: F401  (re-exported)
from harness.data.pipeline import DataFailureError, DataOrder, FailureLog, SubsetOrder, write_failed
from harness.evaluate import evaluate_run, format_metrics
from harness.identity import stamp
from harness.metrics import metrics_upto
from harness.model.presets import RUN_PRESETS
from harness.model_io import (  # noqa: F401  (re-exported: harness.train is their historical home)
    CKPT_FORMAT,
    MODEL_DIR,
    WEIGHTS,
    build_model,
    export_model,
    load_model,
    module_state,
    save_pretrained_atomic,
    saved_modules,
)
from harness.overrides import apply_overrides, blame
from harness.store import atomic_write_text
from harness.train_inputs import (
    PinnedFeatureSource,
    build_inputs,
    check_manifest,
    close_loader,
    local_tokenizer,
    make_train_loader,
    pretrained_tokenizer,
)
from harness.train_schedule import lr_at, stage_index, stages_of
from harness.yamlio import YamlFileError, load_yaml_file

__all__ = ["DataOrder", "SubsetOrder", "DataFailureError", "Trainer", "train_run", "load_model", "main"]

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``failure.json`` in the run directory has the record."""

    def __init__(self, step: int, loss: float, run_dir: Path):
        self.step, self.loss, self.run_dir = step, loss, run_dir
        super().__init__(f"training diverged at step {step}: loss={loss} (see {run_dir / 'failure.json'})")


# ------------------------------------------------------------------------------------------ config I/O
def load_run_config(source: str, overrides: Sequence[str] = ()) -> RunConfig:
    """A RunConfig from a YAML file or preset name plus ``key.path=value`` overrides; ConfigError names
    the file and key of anything wrong, and an override's own mistakes name the override."""
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
def stage_orders(cfg: RunConfig, stages: Sequence[TrainStage], manifest: Any, plugin: Any,
                 world_size: int = 1) -> list[DataOrder | SubsetOrder]:
    """One item stream per stage: the run's full stream, or for a stage with ``families`` the stream of
    its items (the dataset's groups). Errors name the stage whose families have no training items."""
    t = cfg.train
    full = DataOrder(len(manifest), cfg.seed, t.batch_size, t.grad_accum, world_size)
    out: list[DataOrder | SubsetOrder] = []
    for i, st in enumerate(stages):
        if not st.families:
            out.append(full)
            continue
        idx = plugin.select(manifest, st.families)
        if not len(idx):
            raise ValueError(f"train.stages[{i}].families={st.families}: no training items of these families "
                             f"(data.families={cfg.data.families or 'all'})")
        out.append(SubsetOrder(idx, st.start_step, i, cfg.seed, t.batch_size, t.grad_accum, world_size))
    return out


# ------------------------------------------------------------------------------------------ trainer
def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class Trainer:
    """Trains ``cfg`` into ``run_dir``; :meth:`run` returns the summary dict. Under torchrun (or with
    RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set) it joins the process group (nccl on GPU, gloo on CPU)
    and wraps the model in DDP (FSDP for the paper preset or ``train.parallel: fsdp``)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, progress: bool = True, device: str | None = None,
                 activation_checkpointing: bool | None = None, compile_compressor: bool | None = None):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        # `train.activation_checkpointing` / `train.compile_compressor` unless the caller overrides them
        self.activation_checkpointing = (cfg.train.activation_checkpointing if activation_checkpointing is None
                                         else activation_checkpointing)
        self.compile_compressor = cfg.train.compile_compressor if compile_compressor is None else compile_compressor
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

    def _parallel(self) -> str:
        p = self.cfg.train.parallel
        if p == "auto":
            p = "fsdp" if self.cfg.model.llm.preset == "paper" else "ddp"
        return p

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        if self._parallel() == "fsdp":
            # fp32 master weights (sharded), bf16 compute, fp32 gradient reduction
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if self._amp() else None,
                                      reduce_dtype=torch.float32)
            for layer in getattr(model.llm.get_decoder(), "layers", []):
                fully_shard(layer, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    def _amp(self) -> bool:
        return self.cfg.train.bf16 and self.device.type == "cuda"

    # ---------------------------------------------------------------- checkpoint
    def _state(self, model: nn.Module, opt: torch.optim.Optimizer, step: int, stage: int) -> dict[str, Any]:
        if self._parallel() == "fsdp" and self.world > 1:
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
                "rng": rng, "config_hash": config_hash(self.cfg), "world_size": self.world,
                "data_failures": self._flog.state(), "tokens_seen": self._tokens_seen}

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
        return torch.optim.AdamW(groups, lr=self.cfg.train.lr, betas=(0.9, 0.999), **self._adamw_impl(params))

    def _adamw_impl(self, params: list[nn.Parameter]) -> dict[str, bool]:
        """One fused kernel per parameter group on a GPU (``fused``; a DTensor-sharded FSDP model takes
        the multi-tensor ``foreach`` path), torch's default elsewhere (the CPU update is unchanged, so CPU
        runs and their exact resume stay bit-identical)."""
        if self.device.type != "cuda" or not params or not all(p.is_cuda and p.is_floating_point() for p in params):
            return {}
        if self.world > 1 and self._parallel() == "fsdp":
            return {"foreach": True}
        return {"fused": True}

    def _write_failure(self, step: int, loss: float) -> None:
        rec = {"error": "TrainingDiverged", "step": step, "loss": str(loss), "time": time.time(),
               "message": f"loss became {loss} at optimizer step {step}; the last good checkpoint is "
                          f"{self.run_dir / CHECKPOINT} (if any). Lower train.lr or check the data.",
               "config_hash": config_hash(self.cfg)}
        atomic_write_text(self.run_dir / "failure.json", json.dumps(rec, indent=2))

    def _master_weights(self, model: nn.Module, stages: Sequence[TrainStage]) -> None:
        """Every module trained in some stage keeps fp32 weights (bf16 compute comes from autocast /
        FSDP's param_dtype): an AdamW step of 2e-5 on a bf16 weight is below its resolution and lost.
        Also applies the trainer's speed switches (:meth:`_speed_setup`)."""
        trained = {m for s in stages for m in s.train_modules}
        for name, mod in model.submodules().items():
            if name in trained:
                mod.float()
        self._speed_setup(model)

    def _speed_setup(self, model: nn.Module) -> None:
        """Activation checkpointing of the LLM's decoder layers (non-reentrant: gradients still reach the
        visual embeddings of a frozen LLM) and, on a GPU, torch.compile of the compressor's spatial stage
        in place (its parameter names, hence checkpoints, unchanged)."""
        llm = getattr(model, "llm", None)
        if self.activation_checkpointing and llm is not None and hasattr(llm, "gradient_checkpointing_enable"):
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        spatial = getattr(getattr(model, "compressor", None), "spatial", None)
        if self.compile_compressor and self.device.type == "cuda" and spatial is not None:
            spatial.compile()

    def _build(self) -> tuple[nn.Module, Any, Any]:
        """Tokenizer, manifest, model, inputs: cheapest failure first (see :mod:`harness.train_inputs`)."""
        cfg = self.cfg
        tokenizer = pretrained_tokenizer(cfg, self.run_dir)
        plugin = get_dataset(cfg.data.dataset)
        if self.world > 1 and not self.is_main:
            dist.barrier()  # rank 0 builds the manifest once
        manifest = plugin.manifest(cfg.data)
        if self.world > 1 and self.is_main:
            dist.barrier()
        check_manifest(cfg, manifest)
        if tokenizer is None:
            tokenizer = local_tokenizer(cfg, manifest)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every (re)start
        model = build_model(cfg, tokenizer).to(self.device)
        inputs = build_inputs(cfg, manifest, tokenizer, model, self.device)
        return model, manifest, inputs

    @staticmethod
    def _read_back(losses: list[torch.Tensor]) -> list[float]:
        """A window's step losses, read back at once: the one host sync of the window."""
        return torch.stack(losses).tolist()

    def _train_step(self, wrapped: nn.Module, opt: torch.optim.Optimizer, batches: Any, fsrc: Any, flog: FailureLog,
                    amp: Any, step: int) -> dict[str, Any]:
        """One optimizer step: ``grad_accum`` micro-batches from ``batches`` (encode, loss, backward),
        gradient clipping, the AdamW update. Nothing here waits for the GPU: the loss and the gradient
        norm come back as device tensors (the loop reads the losses once per log window), the token
        counts from the host-side token rows. Returns ``{loss, grad_norm, items, tokens, truncated,
        data_s, encode_s}``."""
        t = self.cfg.train
        loss_sum = torch.zeros((), device=self.device)
        n_items = n_tok = n_trunc = 0
        data_s = enc_s = 0.0
        n_visual = self._n_visual
        for micro in range(t.grad_accum):
            tw = time.perf_counter()
            batch = next(batches)
            data_s += time.perf_counter() - tw
            flog.add(batch)
            flog.check(f"step {step}")
            items = batch["items"]
            if not items:
                raise DataFailureError(f"step {step} micro-batch {micro}: every item failed "
                                       f"({batch['failed'][:4]})", dict(flog.failed))
            te = fsrc.encode_s
            feats = fsrc.features(items)
            enc_s += fsrc.encode_s - te
            sync = (micro == t.grad_accum - 1 or self.world == 1 or not hasattr(wrapped, "no_sync"))
            ctx = nullcontext() if sync else wrapped.no_sync()
            with ctx, amp:
                loss = compute_loss(wrapped, feats, items)
                (loss / t.grad_accum).backward()
            loss_sum += loss.detach().float() / t.grad_accum
            n_items += len(items)
            n_tok += sum(n_visual + it["row"].n_text for it in items)
            n_trunc += sum(it["row"].truncated for it in items)
        if self.world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= self.world
        gnorm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], t.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": loss_sum, "grad_norm": gnorm, "items": n_items, "tokens": n_tok, "truncated": n_trunc,
                "data_s": data_s, "encode_s": enc_s}

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        except DataFailureError as e:
            if self.is_main:
                write_data_failure(self.run_dir, self.cfg, e)
            raise
        finally:
            # stop the DataLoader workers now: left to interpreter exit, multiprocessing terminates them
            # and the loader's SIGCHLD handler then reports "DataLoader worker ... killed by signal:
            # Terminated", which hides the error that stopped the run (issue 30)
            close_loader(getattr(self, "_batches", None))
            self._batches = None

    def _run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.train
        self._init_dist()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            atomic_write_text(self.run_dir / "config.json", json.dumps(stamp(to_dict(cfg)), indent=2))
            (self.run_dir / "failure.json").unlink(missing_ok=True)
        torch.manual_seed(cfg.seed)
        stages = stages_of(cfg)
        model, manifest, inputs = self._build()
        self._master_weights(model, stages)
        self._unwrapped = model
        self.model = model
        state = self._load()
        start = 0
        if state is not None:
            missing, unexpected = model.load_state_dict(state["model"], strict=False)
            if unexpected:
                raise ValueError(f"{self.run_dir / CHECKPOINT}: unexpected keys {unexpected[:5]}")
            start = int(state["step"])
        tokens_before = int(state.get("tokens_seen", 0)) if state is not None else 0
        self._tokens_seen = tokens_before
        orders = stage_orders(cfg, stages, manifest, inputs.plugin, self.world)
        flog = FailureLog(cfg.data.max_failure_rate, cfg.data.min_failure_sample,
                          state.get("data_failures") if state is not None else None)
        self._flog = flog  # its state goes into every checkpoint
        fsrc = PinnedFeatureSource(inputs.encoder, self.device, inputs.online_bf16, inputs.cache,
                                   int(cfg.data.cache_budget_gb * 2**30))
        metrics_path = self.run_dir / "metrics.jsonl"
        if self.is_main and metrics_path.exists():
            atomic_write_text(metrics_path, "".join(ln + "\n" for ln in metrics_upto(metrics_path, start)))

        bar = tqdm(total=t.steps, initial=start, desc=f"train {self.run_dir.name}", unit="step",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True)
        stage_i, wrapped, opt = -1, model, None
        t0, items_seen, tokens_seen, win_t, win_items, win_tokens = time.time(), 0, 0, time.time(), 0, 0
        win_data = win_enc = 0.0
        n_truncated = 0
        last_loss = float("nan")
        self._n_visual = inputs.n_visual
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self._amp() else nullcontext()
        loader = make_train_loader(cfg, inputs, orders, [stage_index(stages, s) for s in range(t.steps)], start,
                                   self.rank, pin_memory=self.device.type == "cuda")
        batches = self._batches = iter(loader)
        win_losses: list[torch.Tensor] = []
        win_first = start
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
            st = self._train_step(wrapped, opt, batches, fsrc, flog, amp, step)
            if not win_losses:
                win_first = step
            win_losses.append(st["loss"])
            items_seen += st["items"]
            win_items += st["items"]
            tokens_seen += st["tokens"]
            win_tokens += st["tokens"]
            n_truncated += st["truncated"]
            win_data += st["data_s"]
            win_enc += st["encode_s"]
            gnorm = st["grad_norm"]
            self._tokens_seen = tokens_before + tokens_seen * self.world  # the run's, over every attempt
            bar.update(1)
            done = step + 1
            logged = done % t.log_every == 0 or done == t.steps
            if logged or done % t.checkpoint_every == 0:
                # the losses since the last check, read back at once: the only host sync of a step
                # window (every step's loss stays on the device until then)
                vals = self._read_back(win_losses)
                win_losses.clear()
                for k, v in enumerate(vals):
                    if not math.isfinite(v):
                        bar.close()
                        if self.is_main:
                            self._write_failure(win_first + k, v)
                        raise TrainingDiverged(win_first + k, v, self.run_dir)
                last_loss = vals[-1]
            if logged:
                dt = max(1e-9, time.time() - win_t)
                rec = {"step": done, "loss": round(last_loss, 6), "lr": lr, "grad_norm": float(gnorm),
                       "items_per_s": win_items * self.world / dt, "tokens_per_s": win_tokens * self.world / dt,
                       "elapsed_s": time.time() - t0, "stage": si, "data_wait_frac": round(win_data / dt, 4),
                       "encode_frac": round(win_enc / dt, 4), "failed_reads": flog.n_failures,
                       "tokens_seen": self._tokens_seen}
                bar.set_postfix(loss=f"{last_loss:.3f}", it_s=f"{rec['items_per_s']:.1f}")
                if self.is_main:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    trackers.log_train(done, rec)  # the run's trackers (train.report_to), if any
                win_t, win_items, win_tokens, win_data, win_enc = time.time(), 0, 0, 0.0, 0.0
            if done % t.checkpoint_every == 0 or done == t.steps:
                self._save(wrapped, opt, done, si)
        bar.close()
        close_loader(batches)  # stop the workers
        self._batches = None
        del batches, loader
        if start >= t.steps and self.is_main and not (self.run_dir / MODEL_DIR / WEIGHTS).is_file():
            export_model(model, cfg, self.run_dir / MODEL_DIR, start)
        elapsed = time.time() - t0
        fails = flog.summary()
        if self.is_main:
            write_failed(self.run_dir / "failed_items.jsonl", fails["failed"])
        mst = manifest.stats
        summary = {"steps": t.steps, "resumed_from": start, "final_loss": last_loss,
                   "train_time_s": elapsed, "items_per_s": items_seen * self.world / max(elapsed, 1e-9),
                   "dataset": manifest.name, "dataset_identity": f"{manifest.name}:{manifest.identity}",
                   "n_train_items": len(manifest), "n_failed_videos": fails["n_failed_items"],
                   "data_failures": {k: v for k, v in fails.items() if k != "failed"},
                   "failed_items": dict(list(fails["failed"].items())[:1000]),
                   "manifest": {"n_records": mst.get("n_records"), "n_malformed": mst.get("n_malformed", 0),
                                "malformed": dict(list(mst.get("malformed", {}).items())[:100])},
                   "template": inputs.conv.template, "n_truncated": n_truncated, "features": fsrc.stats(),
                   "visual_tokens_per_item": inputs.n_visual, "world_size": self.world,
                   "params": {k: sum(p.numel() for p in m.parameters()) for k, m in model.submodules().items()},
                   "trained_modules": sorted({m for s in stages for m in s.train_modules}),
                   "run_dir": str(self.run_dir), "config_hash": config_hash(cfg)}
        if self.is_main:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2))
        return summary


def compute_loss(model: nn.Module, feats: torch.Tensor, items: list[dict[str, Any]]) -> torch.Tensor:
    """One micro-batch's loss through the (possibly DDP/FSDP-wrapped) model's forward. ``items``: the
    collated items (``row``: :class:`~harness.data.conversation.TokenRow`, ``id``, ``group``)."""
    rows = [it["row"] for it in items]
    return model(feats, [r.before for r in rows], [r.after for r in rows], [r.labels for r in rows])


def train_run(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoint if present). Raises
    :class:`TrainingDiverged` on a NaN/inf loss and :class:`DataFailureError` when too many items fail
    (both leave ``failure.json``). Returns the summary (also in train_summary.json)."""
    return Trainer(cfg, run_dir, progress=progress).run()


def write_data_failure(run_dir: Path, cfg: RunConfig, e: DataFailureError) -> None:
    """``failure.json`` for a run stopped by bad data, with every failed item and its reason."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {"error": "DataFailureError", "message": str(e), "failed": e.failed, "time": time.time(),
           "config_hash": config_hash(cfg)}
    atomic_write_text(run_dir / "failure.json", json.dumps(rec, indent=2))


# ------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.train",
        description="Train one MambaMia LMM variant: a dataset streamed through the frozen encoder "
                    "(synthetic suite or LLaVA-style conversations), compressor + projector + LLM.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m harness.data make-synthetic --out results/data/mia_synthetic\n"
               "  python -m harness.train tiny --run-dir results/runs/tiny_bi_ssm\n"
               "  python -m harness.train tiny model.compressor.block=transformer train.steps=200\n"
               "  python -m harness.train my_variant.yaml --eval        # train, then score natively\n"
               "  torchrun --nproc-per-node 2 -m harness.train tiny     # DDP (gloo on CPU)\n"
               "  python -m harness.data make-llava-sample --out results/data/llava_sample\n"
               "  python -m harness.train tiny data.dataset=llava_video \\\n"
               "      data.args.mixture=results/data/llava_sample/mixture.yaml data.workers=2\n"
               "  python -m harness.train paper data.dataset=llava_video \\\n"
               "      data.args.mixture=configs/paper_llava_video_178k.yaml train.steps=20\n"
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
    rank = _dist_env()[0]
    # train.report_to: rank 0 reports to the trackers, files in <run-dir>/trackers/
    session = trackers.standalone_session(to_dict(cfg), run_dir, "harness.train") if rank == 0 else None
    final: dict[str, Any] = {"status": "failed"}
    try:
        with trackers.activated(session):
            summary = Trainer(cfg, run_dir, progress=not args.no_progress, device=args.device).run()
        final = {"status": "done"}
        if rank == 0:
            print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "train_time_s", "items_per_s",
                                                       "run_dir")}, indent=2))
        if args.eval and rank == 0:
            res = evaluate_run(cfg, run_dir, progress=not args.no_progress)
            print(format_metrics(res))
            final = {"status": "done", **res}
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (DataFailureError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    finally:
        trackers.close_session(session, final)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
