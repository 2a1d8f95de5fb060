"""The paper-shaped training step on one GPU: vanilla (no compression) against the proposed compressor,
step time, items/s, tokens/s, NVML utilisation and MFU, in one process (issue 30).

Every step is ``harness.train.Trainer._train_step``, the step every training run takes (manifest ->
DataLoader workers decoding only the sampled frames, pinned -> frozen encoder online in bf16 ->
compressor -> projector -> LLM with the chat template, fp32 master weights, fused AdamW on the GPU), with
random weights built from configs (nothing is downloaded) and the generated LLaVA-schema sample
re-encoded at 384x384:

* tower: SigLIP-so400m-shaped (hidden 1152, 27 layers, 16 heads, MLP 4304, 384 px, patch 16: 24x24 = 576
  patches per frame, as SigLIP2-so400m-patch16-384);
* LLM: ``7b`` the Qwen2-7B shape (hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP 18944), ``3b`` the
  Qwen2.5-3B shape (2048, 36, 16, 2, 11008), ``1.5b`` the Qwen2-1.5B shape; max_position_embeddings
  131072 (positions only) so that the uncompressed 64-frame row (36,864 visual tokens) fits: with
  Qwen2's 32,768 every vanilla item was dropped as too long, the loader's batches came back empty, and the
  run died with a DataLoader worker "killed by signal: Terminated" that hid the cause (issue 30);
* arms: ``vanilla`` = ``model.compressor.enabled: false`` (every patch token goes to the LLM, after the
  compressor's two maps and the projector); ``proposed`` = the paper's v2 (GPA one anchor per row, period
  24, bi-Mamba-2, TAA with delta sampling, threshold 0.6, at most 180 frames; random weights keep few
  frames, so the visual token count is recorded); ``proposed_all`` = the same with the TAA keeping every
  frame (``sampling: none``: 24 anchors x frames, the upper bound of what the proposed arm feeds the LLM).

A run is ``ARM:LLM:sSTAGE:fFRAMES:bBATCH[:ac][:compile]`` (stage 1: LLM frozen, gradients through it;
stage 2: LLM trained too, fp32 master weights; ``ac``: activation checkpointing of the LLM's decoder
layers; ``compile``: torch.compile of the compressor's spatial stage). Runs that share arm, LLM and stage
share one model. Each run: ``--warmup`` steps, then timed steps with no host sync between them (wall time
between two ``torch.cuda.synchronize()``), NVML utilisation sampled every 20 ms over the timed window.
A run that runs out of memory is recorded as ``oom`` (``--fit``: then smaller frame counts are tried and
the largest that fits is recorded).

MFU (torchtitan's convention): trained parts 6 N per token, frozen parts 2 N per token, plus attention
(12 / 4 x layers x width x sequence per token, no causal halving); N without embeddings; the LM head on
the labelled tokens only; against the datasheet bf16 dense peak (989 TFLOP/s, H100 SXM / H200) and the
bf16 matmul rate measured at the start. ``hfu`` counts what the GPU executes instead: the backward
through a frozen LLM (2 N more) and the recomputation of activation checkpointing (2 N more).

    python benchmarks/gpu_paper_step.py --runs vanilla:7b:s1:f64:b1:ac proposed:7b:s1:f64:b1
    python benchmarks/gpu_paper_step.py --tiny            # CPU smoke test at toy sizes (both arms)

Writes ``--out`` (default results/benchmarks/gpu_paper_ratio.json) after every run: rows, ratios (vanilla
/ proposed step time at the same LLM, stage, frames and batch, beside the paper's 69.3 h / 5.4 h = 12.8x).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

PAPER_RATIO = 69.3 / 5.4  # training time at 64 frames, vanilla / proposed, 8x A100 (paper v2, cost bars)
DATASHEET_BF16_TFLOPS = 989.4  # H100 SXM and H200, dense bf16
SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                 "num_attention_heads": 16, "image_size": 384, "patch_size": 16}
_QWEN = dict(max_position_embeddings=131072, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
QWEN2 = {"1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                      intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, **_QWEN),
         "3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                    intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, **_QWEN),
         "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, **_QWEN)}
TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
TINY_LLM = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=1000, max_position_embeddings=8192)
ARMS = ("vanilla", "proposed", "proposed_all")
SPEC = re.compile(r"^(?P<arm>[a-z_]+):(?P<llm>[0-9.]+b|tiny):s(?P<stage>[12]):f(?P<frames>\d+):b(?P<batch>\d+)"
                  r"(?P<flags>(:(ac|compile|fit|prof))*)$")


@dataclasses.dataclass(frozen=True)
class Run:
    arm: str
    llm: str
    stage: int
    frames: int
    batch: int
    ac: bool = False
    compile: bool = False
    fit: bool = False  # after an OOM, try fewer frames and record the largest count that fits
    prof: bool = False  # profile two more steps: kernel busy fraction, host syncs per step, top kernels

    @staticmethod
    def parse(text: str) -> Run:
        m = SPEC.match(text)
        if not m or m["arm"] not in ARMS:
            raise SystemExit(f"bad run {text!r}: ARM:LLM:sSTAGE:fFRAMES:bBATCH[:ac][:compile][:fit][:prof], "
                             f"ARM in {ARMS}")
        flags = set(filter(None, m["flags"].split(":")))
        return Run(m["arm"], m["llm"], int(m["stage"]), int(m["frames"]), int(m["batch"]), "ac" in flags,
                   "compile" in flags, "fit" in flags, "prof" in flags)

    @property
    def name(self) -> str:
        return (f"{self.arm}:{self.llm}:s{self.stage}:f{self.frames}:b{self.batch}" + (":ac" if self.ac else "")
                + (":compile" if self.compile else ""))

    @property
    def group(self) -> tuple[str, str, int, bool]:  # runs that share one model
        return (self.arm, self.llm, self.stage, self.compile)


# ----------------------------------------------------------------------------------------- set-up
def run_config(r: Run, tiny: bool, data_root: Path, llm_dir: Path, work: Path, workers: int) -> Any:
    from harness.config import RunConfig, build

    tower = TINY_TOWER if tiny else SIGLIP_SO400M
    patches_per_row = tower["image_size"] // tower["patch_size"]
    stage = ["compressor", "projector"] + (["llm"] if r.stage == 2 else [])
    comp = {"d_in": tower["hidden_size"], "d_model": 64 if tiny else 1024, "d_out": 64 if tiny else 1024,
            "block": "bi_ssm", "pooling": "gpa", "spatial": {"period": patches_per_row, "n_layers": 1},
            "ssm": {"version": 2},
            "taa": {"enabled": True, "n_layers": 1, "sampling": "none" if r.arm == "proposed_all" else "delta",
                    "threshold": 0.6, "max_frames": 180}}
    if r.arm == "vanilla":
        comp = {"d_in": tower["hidden_size"], "d_model": comp["d_model"], "d_out": comp["d_out"], "enabled": False}
    return build(RunConfig, {
        "model": {"encoder": {"name": "siglip", "config": tower, "batch_size": 64},
                  "llm": {"preset": "paper", "random_init": True, "name_or_path": str(llm_dir), "dtype": "bfloat16",
                          "bpe_vocab_size": 1000 if tiny else 8192},
                  "compressor": comp},
        "data": {"dataset": "llava_video", "args": {"mixture": str(data_root / "mixture.yaml")},
                 "n_frames": r.frames, "manifest_dir": str(work / "manifests"), "workers": workers,
                 "max_failure_rate": 1.0},
        "train": {"steps": 100_000, "batch_size": r.batch, "lr": 2e-5, "warmup_steps": 0, "bf16": True,
                  "train_modules": stage, "parallel": "ddp"},
    })


def make_data(root: Path, size: int, n_videos: int, seconds: float) -> None:
    """The LLaVA-schema sample, without its damaged files, at ``size`` px and ``seconds`` per video (8 fps)."""
    import numpy as np
    import yaml

    from harness.data.llava_sample import SUBSET, _frames
    from harness.data.video import write_video

    rng = np.random.default_rng(0)
    sub = root / SUBSET
    (sub / "videos").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n_videos):
        write_video(sub / "videos" / f"v{i}.mp4", _frames("red", "left", int(seconds * 8), size, rng), fps=8.0,
                    options={"preset": "ultrafast"})
        recs.append({"id": f"v{i}", "video": f"videos/v{i}.mp4", "conversations": [
            {"from": "human", "value": "<image>\nDescribe what happens in the video in detail."},
            {"from": "gpt", "value": "A red square moves from the right to the left over a grey background. " * 4}]})
    (sub / "cap.json").write_text(json.dumps(recs))
    (root / "mixture.yaml").write_text(yaml.safe_dump({"datasets": [
        {"json_path": f"{SUBSET}/cap.json", "video_folder": SUBSET, "sampling_strategy": "all"}]}))


class Nvml:
    """GPU utilisation (NVML's "percent of time a kernel was running" over its sample period) every
    ``period`` s in a thread, between start() and stop()."""

    def __init__(self, period: float = 0.02):
        self.period, self.values, self._stop, self._t = period, [], threading.Event(), None
        self.read = None
        if torch.cuda.is_available():
            try:
                import pynvml

                pynvml.nvmlInit()
                h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                self.read = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                self.read()
            except Exception:  # noqa: BLE001 - no NVML: torch's own reader, or nothing
                try:
                    torch.cuda.utilization()
                    self.read = lambda: float(torch.cuda.utilization())
                except Exception:  # noqa: BLE001
                    self.read = None

    def start(self) -> None:
        self.values, self._stop = [], threading.Event()
        if self.read is not None:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(self.read())
            time.sleep(self.period)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._t is not None:
            self._t.join()
        v = self.values
        return {"nvml_util_pct": round(statistics.mean(v), 1) if v else None,
                "nvml_util_median_pct": statistics.median(v) if v else None, "nvml_samples": len(v)}


def matmul_tflops(device: torch.device) -> float | None:
    """bf16 8192^3 matmul rate on random data (median of 20 after 5), the measured ceiling."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    ts = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    del a, b
    return round(2 * 8192**3 / statistics.median(ts) / 1e12, 1)


# ----------------------------------------------------------------------------------------- FLOPs
def _n_params(mod: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in mod.named_parameters() if not any(s in n for s in skip))


class LinearFlops:
    """Forward matmul FLOPs of every nn.Linear / nn.Conv2d under a module, counted by hooks during one step."""

    def __init__(self, mod: torch.nn.Module):
        self.flops = 0
        self._h = [m.register_forward_hook(self._hook) for m in mod.modules()
                   if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]

    def _hook(self, m: torch.nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(m, torch.nn.Linear):
            self.flops += 2 * (out.numel() // m.out_features) * m.in_features * m.out_features
        else:
            k = m.weight[0].numel()  # in/groups * kh * kw
            self.flops += 2 * out.numel() * k

    def remove(self) -> None:
        for h in self._h:
            h.remove()


def step_flops(model: Any, r: Run, enc: Any, seq_tokens: float, n_labels: float, comp_fwd: float,
               proj_fwd: float) -> dict[str, float]:
    """Per-step FLOPs: the MFU count (issue 30 / torchtitan) and the executed count (hfu)."""
    llm = model.llm
    c = llm.config
    d, layers = c.hidden_size, c.num_hidden_layers
    n_llm = _n_params(llm, ("embed_tokens", "lm_head"))
    tower = enc.model
    tc = tower.config
    P = enc.num_patches
    n_tower = _n_params(tower, ("position_embedding",))
    frames = r.batch * r.frames
    tower_f = 2 * n_tower * frames * P + 4 * tc.num_hidden_layers * tc.hidden_size * P * P * frames
    llm_lin = 2 * n_llm * seq_tokens + 2 * c.vocab_size * d * n_labels
    llm_att = 4 * layers * d * seq_tokens * (seq_tokens / r.batch)  # per row: tokens x sequence
    trained = r.stage == 2
    mfu = tower_f + 3 * (comp_fwd + proj_fwd) + (3 if trained else 1) * (llm_lin + llm_att)
    # executed: the backward through a frozen LLM computes input gradients (about 1x forward for the
    # matmuls, 2x for attention); checkpointing recomputes the forward once
    llm_exec = (3 if trained else 2) * llm_lin + 3 * llm_att
    if r.ac:
        llm_exec += llm_lin + llm_att
    hfu = tower_f + 3 * (comp_fwd + proj_fwd) + llm_exec
    return {"flops_mfu": mfu, "flops_executed": hfu, "tower_fwd_flops": tower_f, "compressor_fwd_flops": comp_fwd,
            "projector_fwd_flops": proj_fwd, "llm_fwd_flops": llm_lin + llm_att, "llm_params_nonembed": n_llm,
            "tower_params": n_tower}


# ----------------------------------------------------------------------------------------- one model
class Group:
    """One model (arm, LLM, stage) and the trainer around it; :meth:`measure` runs one frame count and batch."""

    def __init__(self, r: Run, a: argparse.Namespace, work: Path, device: torch.device):
        from harness.train import Trainer, stages_of

        self.a, self.work, self.device = a, work, device
        self.cfg = run_config(r, a.tiny, work / "data", work / f"llm_{r.llm}", work, a.workers)
        self.tr = Trainer(self.cfg, work / f"run_{r.arm}_{r.llm}_s{r.stage}", progress=False, device=str(device),
                          compile_compressor=r.compile)
        self.stages = stages_of(self.cfg)
        ctx = torch.device(device) if device.type == "cuda" else _nullctx()
        with ctx:  # random weights made on the GPU: seconds, not a minute of CPU init for 7B
            self.model, self.manifest, self.inputs = self.tr._build()
        self.tr._master_weights(self.model, self.stages)
        self.tr._unwrapped = self.model
        self.tr._set_trainable(self.stages[0])
        self.opt = self.tr._optimizer([p for p in self.model.parameters() if p.requires_grad])
        self.adamw = self.tr._adamw_impl([p for p in self.model.parameters() if p.requires_grad])

    def inputs_for(self, r: Run) -> Any:
        from harness.data.conversation import ConversationEncoder
        from harness.train_inputs import check_visual_room

        inp = self.inputs
        n_vis = self.model.count_visual_tokens(r.frames, inp.encoder.num_patches)
        max_len = self.cfg.data.max_length or int(self.model.llm.config.max_position_embeddings)
        check_visual_room(self.cfg, n_vis, max_len, inp.encoder.num_patches)
        conv = ConversationEncoder(self.model.tokenizer, inp.conv.template, n_vis, max_len,
                                   self.cfg.model.video_position)
        return dataclasses.replace(inp, conv=conv, video=dataclasses.replace(inp.video, n_frames=r.frames),
                                   n_visual=n_vis)

    def measure(self, r: Run, nvml: Nvml) -> dict[str, Any]:
        from harness.config import RunConfig, build, to_dict
        from harness.data.pipeline import FailureLog
        from harness.train import stage_index, stage_orders
        from harness.train_inputs import PinnedFeatureSource, close_loader, make_train_loader

        a, tr, model, dev = self.a, self.tr, self.model, self.device
        cuda = dev.type == "cuda"
        d = to_dict(self.cfg)
        d["data"]["n_frames"], d["train"]["batch_size"] = r.frames, r.batch
        cfg = build(RunConfig, d)
        inp = self.inputs_for(r)
        tr.cfg, tr._n_visual = cfg, inp.n_visual
        llm = model.llm
        if r.ac:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif getattr(llm, "is_gradient_checkpointing", False):
            llm.gradient_checkpointing_disable()
        orders = stage_orders(cfg, self.stages, self.manifest, inp.plugin)
        n_steps = a.warmup + a.steps
        loader = make_train_loader(cfg, inp, orders, [stage_index(self.stages, s) for s in range(n_steps + 4)], 0, 0,
                                   pin_memory=cuda)
        fsrc = PinnedFeatureSource(inp.encoder, dev, inp.online_bf16)
        flog = FailureLog(1.0, 10**9)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else _nullctx()
        vis_tokens: list[int] = []
        hook = model.projector.register_forward_hook(lambda m, i, o: vis_tokens.append(int(o.shape[1])))
        batches = iter(loader)
        phase = "warmup"
        res: dict[str, Any] = {}
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
            model.train()
            t_first = time.perf_counter()
            float(tr._train_step(model, self.opt, batches, fsrc, flog, amp, 0)["loss"])  # workers start here
            res["first_step_s"] = round(time.perf_counter() - t_first, 3)
            phase = "count"  # the second step also counts the compressor's and projector's matmul FLOPs
            counter_c, counter_p = LinearFlops(model.compressor), LinearFlops(model.projector)
            t_second = time.perf_counter()
            try:
                float(tr._train_step(model, self.opt, batches, fsrc, flog, amp, 1)["loss"])
            finally:
                counter_c.remove()
                counter_p.remove()
            res["second_step_s"] = round(time.perf_counter() - t_second, 3)
            phase = "warmup"
            n_timed = a.steps
            if res["second_step_s"] > 1.5:  # a slow (uncompressed) step: fewer timed steps, no more warm-up
                n_timed = min(a.steps, a.slow_steps)
            else:
                for i in range(2, a.warmup):
                    tr._train_step(model, self.opt, batches, fsrc, flog, amp, i)
            phase = "timed"
            vis_tokens.clear()
            if cuda:
                torch.cuda.synchronize()
            nvml.start()
            t0 = time.perf_counter()
            sts = [tr._train_step(model, self.opt, batches, fsrc, flog, amp, a.warmup + i) for i in range(n_timed)]
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            res.update(nvml.stop())
            vis_timed = list(vis_tokens)
            losses = [float(s["loss"]) for s in sts]
            if r.prof:
                phase = "profile"
                res["profile"] = profile_steps(lambda i: tr._train_step(model, self.opt, batches, fsrc, flog, amp,
                                                                        n_steps + i), 2)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
            if not _is_oom(e):
                raise
            nvml.stop()
            return {"oom": True, "phase": phase, "error": str(e).split("\n")[0][:300],
                    "peak_mem_gib": _peak(dev)}
        finally:
            hook.remove()
            close_loader(batches)
            self.opt.zero_grad(set_to_none=True)
        items = sum(s["items"] for s in sts)
        text = sum(s["tokens"] for s in sts) - items * inp.n_visual
        vis = statistics.mean(vis_timed) if vis_timed else float(inp.n_visual)
        seq_per_item = vis + text / items
        n_labels = statistics.mean(len([t for t in it_lab if t != -100]) for it_lab in _labels(inp))
        fl = step_flops(model, r, inp.encoder, seq_per_item * r.batch, n_labels * r.batch,
                        counter_c.flops / 1.0, counter_p.flops / 1.0)
        step_s = wall / n_timed
        out = {"step_s": round(step_s, 4), "items_per_s": round(items / wall, 3),
               "llm_tokens_per_item": round(seq_per_item, 1), "visual_tokens_per_item": round(vis, 1),
               "visual_tokens_bound": inp.n_visual, "text_tokens_per_item": round(text / items, 1),
               "tokens_per_s": round(seq_per_item * items / wall, 1),
               "data_wait_s_per_step": round(sum(s["data_s"] for s in sts) / n_timed, 4), "timed_steps": n_timed,
               "peak_mem_gib": _peak(dev), "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
               "losses_finite": all(math.isfinite(x) for x in losses), **res,
               "tflops_per_s_mfu": round(fl["flops_mfu"] / step_s / 1e12, 1),
               "tflops_per_s_executed": round(fl["flops_executed"] / step_s / 1e12, 1),
               "flops_per_step": {k: float(f"{v:.4g}") for k, v in fl.items()}}
        if cuda:
            out["mfu_pct"] = round(100 * fl["flops_mfu"] / step_s / 1e12 / DATASHEET_BF16_TFLOPS, 2)
            out["hfu_pct"] = round(100 * fl["flops_executed"] / step_s / 1e12 / DATASHEET_BF16_TFLOPS, 2)
            if a.peak:
                out["mfu_pct_of_measured_peak"] = round(100 * fl["flops_mfu"] / step_s / 1e12 / a.peak, 2)
        return out

    def close(self) -> None:
        self.model = self.opt = self.inputs = self.tr = None


def profile_steps(step: Any, n: int) -> dict[str, Any]:
    """torch.profiler over ``n`` steps: the fraction of the wall time some kernel runs (union of kernel
    intervals), the host syncs per step (cudaStreamSynchronize / cudaDeviceSynchronize / blocking
    cudaMemcpy / event syncs), the top kernels by GPU time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(n):
            step(i)
        sync()
    wall_us = (time.perf_counter() - t0) * 1e6
    evs = prof.events()
    spans = sorted((e.time_range.start, e.time_range.end) for e in evs if e.device_type == DeviceType.CUDA)
    busy, cur_s, cur_e = 0.0, None, None
    for a, b in spans:
        if cur_e is None or a > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None:
        busy += cur_e - cur_s
    cpu = [e for e in evs if e.device_type == DeviceType.CPU]
    t_first = min((e.time_range.start for e in cpu), default=0.0)
    t_last = max((e.time_range.end for e in cpu), default=wall_us)
    syncs: dict[str, int] = {}
    for e in cpu:
        if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"):
            syncs[e.name] = syncs.get(e.name, 0) + 1
    top = sorted((k for k in prof.key_averages() if getattr(k, "device_time_total", 0) > 0),
                 key=lambda k: -k.device_time_total)[:12]
    return {"steps": n, "wall_ms_per_step": round(wall_us / n / 1e3, 2),
            "kernel_busy_pct": round(100 * busy / max(t_last - t_first, 1.0), 1),
            "n_kernels_per_step": round(len(spans) / n), "host_syncs_per_step": {k: v / n for k, v in syncs.items()},
            "top_kernels_ms_per_step": [[k.key[:90], round(k.device_time_total / n / 1e3, 2), k.count // n]
                                        for k in top]}


def _labels(inp: Any) -> list[list[int]]:
    """The label rows of the first few records (the loss's labelled token count per item)."""
    out = []
    for j in range(min(4, len(inp.manifest))):
        out.append(inp.conv.encode(inp.manifest.record(j)["conversations"]).labels)
    return out


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower() \
        or "CUBLAS_STATUS_ALLOC_FAILED" in str(e)


def _peak(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def wait_for_mamba(path: str, limit_s: float) -> dict[str, Any]:
    """Block until ``path`` exists (the build script touches it once mamba-ssm is installed), then make
    this process see the new package (import caches, the harness's cached kernel look-ups)."""
    t0 = time.perf_counter()
    while not Path(path).exists() and time.perf_counter() - t0 < limit_s:
        time.sleep(2)
    importlib.invalidate_caches()
    from harness.model import ssm
    from harness.model.ssm import ssd

    for mod in (ssm, ssd):
        for name in dir(mod):
            f = getattr(mod, name)
            if callable(getattr(f, "cache_clear", None)) and name.startswith("cuda_"):
                f.cache_clear()
    return {"waited_s": round(time.perf_counter() - t0, 1), "ready": Path(path).exists()}


def ssm_info(device: torch.device) -> dict[str, Any]:
    from harness.model.ssm.ssd import cuda_split_conv1d_scan_fn, resolve_ssd_backend

    info = {"ssd_backend": resolve_ssd_backend("auto", device),
            "fused_conv_scan": cuda_split_conv1d_scan_fn() is not None}
    try:
        import mamba_ssm

        info["mamba_ssm"] = mamba_ssm.__version__
    except Exception:  # noqa: BLE001
        info["mamba_ssm"] = None
    return info


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vanilla / proposed at the same LLM, stage, frames and batch (each arm at its own best fitting
    setting: checkpointing where the arm needs it to fit, else without)."""
    ok = [r for r in rows if "step_s" in r]
    out = []
    for v in [r for r in ok if r["arm"] == "vanilla"]:
        for p in [r for r in ok if r["arm"] in ("proposed", "proposed_all")]:
            if (p["llm"], p["stage"], p["frames"], p["batch"]) != (v["llm"], v["stage"], v["frames"], v["batch"]):
                continue
            out.append({"llm": v["llm"], "stage": v["stage"], "frames": v["frames"], "batch": v["batch"],
                        "vanilla": v["run"], "proposed": p["run"],
                        "step_time_ratio": round(v["step_s"] / p["step_s"], 2),
                        "items_per_s_ratio": round(p["items_per_s"] / v["items_per_s"], 2),
                        "llm_tokens_per_item": [v["llm_tokens_per_item"], p["llm_tokens_per_item"]],
                        "paper_ratio": round(PAPER_RATIO, 2)})
    return out


def summarize(paths: list[str]) -> None:
    """Markdown tables of one or more JSONs written by this script (the docs' tables)."""
    for path in paths:
        doc = json.loads(Path(path).read_text())
        m = doc["machine"]
        print(f"### {path}: {m.get('gpu')} (torch {m.get('torch')}), matmul {doc.get('matmul_bf16_tflops')} TFLOP/s\n")
        print("| run | step s | items/s | LLM tokens/item (visual) | tokens/s | NVML % | MFU % | HFU % | peak GiB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in doc["rows"]:
            if r.get("oom"):
                print(f"| {r['run']} | OOM ({r.get('phase')}) | | | | | | | {r.get('peak_mem_gib') or ''} |")
            elif "step_s" in r:
                print(f"| {r['run']} | {r['step_s']:.3f} | {r['items_per_s']:.2f} | {r['llm_tokens_per_item']:.0f} "
                      f"({r['visual_tokens_per_item']:.0f}) | {r['tokens_per_s']:.0f} | {r.get('nvml_util_pct')} | "
                      f"{r.get('mfu_pct')} | {r.get('hfu_pct')} | {r.get('peak_mem_gib')} |")
            else:
                print(f"| {r['run']} | {r.get('skipped', 'not run')} | | | | | | | |")
        print()
        for x in doc.get("ratios", []):
            print(f"- {x['vanilla']} / {x['proposed']}: step time {x['step_time_ratio']}x, items/s "
                  f"{x['items_per_s_ratio']}x (paper {x['paper_ratio']}x); LLM tokens per item "
                  f"{x['llm_tokens_per_item'][0]:.0f} vs {x['llm_tokens_per_item'][1]:.0f}")
        for r in doc["rows"]:
            if "profile" in r:
                print(f"- profile {r['run']}: {json.dumps(r['profile'])}")
        print()


def main() -> int:
    if sys.argv[1:2] == ["--summarize"]:
        summarize(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=["vanilla:7b:s1:f64:b1:ac", "proposed:7b:s1:f64:b1"])
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (a smoke test of this script)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--slow-steps", type=int, default=2, help="timed steps of runs whose first step takes > 2 s")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each generated video (8 fps)")
    ap.add_argument("--fit", action="store_true", help="after an OOM, try smaller frame counts (largest that fits)")
    ap.add_argument("--wait-for-mamba", default="", help="before the first compressed run, wait for this file")
    ap.add_argument("--wait-limit", type=float, default=420.0)
    ap.add_argument("--deadline", type=float, default=0.0, help="skip runs once this many seconds have passed")
    ap.add_argument("--out", default="results/benchmarks/gpu_paper_ratio.json")
    a = ap.parse_args()
    from transformers import Qwen2Config

    from harness.store import atomic_write_text

    t_start = time.perf_counter()
    runs = [Run.parse(s) for s in a.runs]
    if a.tiny:
        runs = [dataclasses.replace(r, llm="tiny", frames=min(r.frames, 8)) for r in runs]
        a.steps, a.warmup, a.slow_steps, a.workers, a.videos, a.seconds = 2, 1, 2, 0, 2, 2.0
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    a.peak = matmul_tflops(device)
    nvml = Nvml()
    doc: dict[str, Any] = {"machine": machine(), "device": str(device), "matmul_bf16_tflops": a.peak,
                           "datasheet_bf16_tflops": DATASHEET_BF16_TFLOPS, "paper_ratio": round(PAPER_RATIO, 2),
                           "tower": TINY_TOWER if a.tiny else SIGLIP_SO400M, "workers": a.workers,
                           "steps": a.steps, "warmup": a.warmup, "nvml": nvml.read is not None, "rows": []}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        doc["ratios"] = ratios(doc["rows"])
        atomic_write_text(out, json.dumps(doc, indent=1))

    with tempfile.TemporaryDirectory(prefix="paper_step_") as tmp:
        work = Path(tmp)
        for name in sorted({r.llm for r in runs}):
            Qwen2Config(**(TINY_LLM if a.tiny else QWEN2[name])).save_pretrained(work / f"llm_{name}")
        t0 = time.perf_counter()
        make_data(work / "data", 32 if a.tiny else 384, a.videos, a.seconds)
        doc["data_s"] = round(time.perf_counter() - t0, 1)
        print(f"data: {a.videos} videos in {doc['data_s']} s", file=sys.stderr)
        group, gkey, waited, build_s = None, None, not a.wait_for_mamba, 0.0
        for r in runs:
            if a.deadline and time.perf_counter() - t_start > a.deadline:
                doc["rows"].append({"run": r.name, **dataclasses.asdict(r), "skipped": "deadline"})
                save()
                continue
            if r.arm != "vanilla" and not waited:
                doc["mamba_wait"] = wait_for_mamba(a.wait_for_mamba, a.wait_limit)
                waited = True
            if r.group != gkey:
                if group is not None:
                    group.close()
                group = None
                _free()
                gkey = r.group
                try:
                    t0 = time.perf_counter()
                    group = Group(r, a, work, device)
                    build_s = round(time.perf_counter() - t0, 1)
                except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                    if not _is_oom(e):
                        raise
                    _free()
                    doc["rows"].append({"run": r.name, **dataclasses.asdict(r), "oom": True, "phase": "build",
                                        "error": str(e).split("\n")[0][:300]})
                    save()
                    continue
            if group is None:
                doc["rows"].append({"run": r.name, **dataclasses.asdict(r), "oom": True, "phase": "build"})
                save()
                continue
            frames_try = [r.frames]
            if a.fit or r.fit:
                frames_try += [f for f in (r.frames * 3 // 4, r.frames // 2, r.frames // 4, r.frames // 8) if f >= 4]
            for f in frames_try:
                rr = dataclasses.replace(r, frames=f)
                t0 = time.perf_counter()
                res = group.measure(rr, nvml)
                if a.wait_for_mamba:
                    res["mamba_build_running"] = not Path(a.wait_for_mamba).exists()
                row = {"run": rr.name, **dataclasses.asdict(rr), **res, "build_s": build_s,
                       "wall_s": round(time.perf_counter() - t0, 1), "adamw": group.adamw,
                       "ssm": ssm_info(device) if r.arm != "vanilla" else None}
                build_s = 0.0
                doc["rows"].append(row)
                save()
                print(json.dumps({k: v for k, v in row.items() if k != "flops_per_step"}), file=sys.stderr)
                _free()
                if "oom" not in res:
                    break
        if group is not None:
            group.close()
    doc["total_s"] = round(time.perf_counter() - t_start, 1)
    save()
    cols = ["run", "step_s", "items_per_s", "llm_tokens_per_item", "tokens_per_s", "nvml_util_pct", "mfu_pct",
            "hfu_pct", "peak_mem_gib"]
    print(" | ".join(cols))
    for row in doc["rows"]:
        print(" | ".join("OOM" if row.get("oom") and c == "step_s" else str(row.get(c, "")) for c in cols))
    for x in doc["ratios"]:
        print(f"ratio {x['vanilla']} / {x['proposed']}: step time {x['step_time_ratio']}x, items/s "
              f"{x['items_per_s_ratio']}x (paper {x['paper_ratio']}x), tokens/item {x['llm_tokens_per_item']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
