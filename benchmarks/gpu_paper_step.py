"""The paper-shaped training step at 64 frames on one GPU: items/s, GPU busy %, peak memory, and the split
of a step into decode / encode / compressor / LLM.

Everything is the training code of ``harness.train`` (manifest -> DataLoader workers decoding only the
sampled frames -> frozen encoder online in bf16 -> MambaMia v2 compressor -> projector -> LLM with
the chat template, fp32 master weights, AdamW), with random weights built from configs (nothing is
downloaded) and the generated LLaVA-schema sample re-encoded at 384x384:

* tower: SigLIP-so400m-shaped (hidden 1152, 27 layers, 16 heads, MLP 4304, 384 px, patch 16: 24x24 = 576
  patches per frame, as SigLIP2-so400m-patch16-384);
* LLM: Qwen2-1.5B-shaped (hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960, vocabulary 151936;
  ``--llm 7b``: the Qwen2-7B shape), a byte-level BPE tokenizer learnt from the data;
* compressor: the paper's v2 (GPA one anchor per row, period 24, bi-Mamba-2, TAA with delta sampling,
  threshold 0.6, at most 180 frames), on mamba-ssm's kernels when installed (``ssm_backend`` in the JSON).

Each step is ``--batch`` items; stage 2 (LLM trained too) by default, ``--stage 1`` freezes the LLM.
Phases are timed between ``torch.cuda.synchronize()`` calls: ``decode_wait`` (blocked on the DataLoader:
decoding not hidden by the workers), ``encode``, ``compressor`` (compressor + projector forward), ``llm``
(LLM forward), ``backward``, ``optimizer``. GPU busy % = CUDA-event time of the GPU phases / wall time
of the steps (the syncs cost a little; they are what makes the split exact), and, when NVML answers,
the mean of ``torch.cuda.utilization()`` sampled every 50 ms.

    python benchmarks/gpu_paper_step.py                      # H200: 64 frames, batch 1..4, stage 2
    python benchmarks/gpu_paper_step.py --batch 1 2 4 8 --workers 8
    python benchmarks/gpu_paper_step.py --tiny               # CPU smoke test at toy sizes

Writes results/benchmarks/gpu_paper_step.json (``--tiny``: gpu_paper_step_tiny.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                 "num_attention_heads": 16, "image_size": 384, "patch_size": 16}
QWEN2 = {"1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                      intermediate_size=8960, vocab_size=151936, max_position_embeddings=32768,
                      rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
         "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
                    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)}
TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
TINY_LLM = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=1000, max_position_embeddings=8192)


def run_config(a: argparse.Namespace, data_root: Path, llm_dir: Path, work: Path, batch: int) -> Any:
    from harness.config import RunConfig, build

    tower = TINY_TOWER if a.tiny else SIGLIP_SO400M
    patches_per_row = tower["image_size"] // tower["patch_size"]
    stage = ["compressor", "projector"] + (["llm"] if a.stage == 2 else [])
    return build(RunConfig, {
        "model": {"encoder": {"name": "siglip", "config": tower, "batch_size": 64},
                  "llm": {"preset": "paper", "random_init": True, "name_or_path": str(llm_dir), "dtype": "bfloat16",
                          "bpe_vocab_size": 1000 if a.tiny else 8192},
                  "compressor": {"d_in": tower["hidden_size"], "d_model": 64 if a.tiny else 1024,
                                 "d_out": 64 if a.tiny else 1024, "block": "bi_ssm", "pooling": "gpa",
                                 "spatial": {"period": patches_per_row, "n_layers": 1}, "ssm": {"version": 2},
                                 "taa": {"enabled": True, "n_layers": 1, "sampling": "delta", "threshold": 0.6,
                                         "max_frames": 180}}},
        "data": {"dataset": "llava_video", "args": {"mixture": str(data_root / "mixture.yaml")},
                 "n_frames": a.frames, "manifest_dir": str(work / "manifests"), "workers": a.workers,
                 "max_failure_rate": 1.0},
        "train": {"steps": a.steps, "batch_size": batch, "lr": 2e-5, "warmup_steps": 0, "bf16": True,
                  "train_modules": stage},
    })


def make_data(root: Path, size: int, n_videos: int, seconds: float) -> None:
    """The LLaVA-schema sample, without its damaged files, at ``size`` px and ``seconds`` per video."""
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


class Sampler:
    """``torch.cuda.utilization()`` every 50 ms in a thread (NVML; None when it does not answer)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._stop = threading.Event()
        self.ok = False
        if torch.cuda.is_available():
            try:
                torch.cuda.utilization()
                self.ok = True
            except Exception:  # noqa: BLE001 - no NVML / pynvml
                self.ok = False

    def __enter__(self) -> Sampler:
        if self.ok:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(float(torch.cuda.utilization()))
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None


def measure(cfg: Any, run_dir: Path, device: torch.device, warmup: int) -> dict[str, Any]:
    from harness.data.pipeline import FeatureSource
    from harness.model.ssm import resolve_backend
    from harness.train import Trainer, stage_index, stage_orders, stages_of
    from harness.train_inputs import make_train_loader

    tr = Trainer(cfg, run_dir, progress=False, device=str(device))
    stages = stages_of(cfg)
    model, manifest, inputs = tr._build()
    tr._master_weights(model, stages)
    tr._unwrapped = model
    tr._set_trainable(stages[0])
    opt = tr._optimizer([p for p in model.parameters() if p.requires_grad])
    orders = stage_orders(cfg, stages, manifest, inputs.plugin)
    loader = make_train_loader(cfg, inputs, orders, [stage_index(stages, s) for s in range(cfg.train.steps)], 0, 0)
    fsrc = FeatureSource(inputs.encoder, device, inputs.online_bf16)
    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    phases = ("decode_wait", "encode", "compressor", "llm", "backward", "optimizer")
    walls: dict[str, list[float]] = {p: [] for p in phases}
    gpu_ms: list[float] = []
    step_s: list[float] = []
    n_tokens: list[int] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    batches = iter(loader)
    with Sampler() as util:
        for step in range(cfg.train.steps):
            sync()
            t_step = time.perf_counter()
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else None
            marks = {}
            t = time.perf_counter()
            batch = next(batches)
            marks["decode_wait"] = time.perf_counter() - t
            items = batch["items"]
            if ev:
                ev[0].record()
            t = time.perf_counter()
            feats = fsrc.features(items)
            sync()
            marks["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            with amp:
                vis, out = model.encode_video(feats)
            sync()
            marks["compressor"] = time.perf_counter() - t
            rows = [it["row"] for it in items]
            t = time.perf_counter()
            with amp:
                loss = model.sft_loss(list(vis), [r.before for r in rows], [r.after for r in rows],
                                      [r.labels for r in rows])
            sync()
            marks["llm"] = time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            sync()
            marks["backward"] = time.perf_counter() - t
            t = time.perf_counter()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            marks["optimizer"] = time.perf_counter() - t
            if ev:
                ev[1].record()
                torch.cuda.synchronize()
            if step >= warmup:
                for p in phases:
                    walls[p].append(marks[p])
                step_s.append(time.perf_counter() - t_step)
                if ev:
                    gpu_ms.append(ev[0].elapsed_time(ev[1]))
                n_tokens.append(int(vis.shape[1]))
    total = sum(step_s)
    res = {"items_per_s": len(step_s) * cfg.train.batch_size / total, "step_s": statistics.median(step_s),
           "visual_tokens": statistics.median(n_tokens) if n_tokens else None,
           "split_frac": {p: round(sum(walls[p]) / total, 4) for p in phases},
           "split_s": {p: round(statistics.median(walls[p]), 4) for p in phases},
           "gpu_busy_pct": round(100 * sum(gpu_ms) / 1000 / total, 1) if gpu_ms else None,
           "nvml_util_pct": util.mean(),
           "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
           "ssm_backend": resolve_backend("auto", device), "loss": float(loss.detach())}
    del batches, loader
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (a smoke test of this script)")
    ap.add_argument("--llm", choices=sorted(QWEN2), default="1.5b")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--stage", type=int, choices=(1, 2), default=2)
    ap.add_argument("--steps", type=int, default=12, help="steps per batch size (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each generated video")
    a = ap.parse_args()
    from transformers import Qwen2Config

    if a.tiny:
        a.frames, a.batch, a.steps, a.warmup = min(a.frames, 8), a.batch[:2], min(a.steps, 4), 1
        a.workers, a.videos, a.seconds = min(a.workers, 2), 4, 4.0
    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="paper_step_") as tmp:
        work = Path(tmp)
        llm_dir = work / "llm"
        Qwen2Config(**(TINY_LLM if a.tiny else QWEN2[a.llm])).save_pretrained(llm_dir)
        t0 = time.perf_counter()
        make_data(work / "data", 32 if a.tiny else 384, a.videos, a.seconds)
        print(f"data: {a.videos} videos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for b in a.batch:
            cfg = run_config(a, work / "data", llm_dir, work, b)
            try:
                r = measure(cfg, work / f"run_b{b}", device, a.warmup)
            except torch.cuda.OutOfMemoryError as e:
                r = {"error": f"OOM: {str(e)[:200]}"}
                torch.cuda.empty_cache()
            row = {"batch": b, "frames": a.frames, "stage": a.stage, **r}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    flat = [{**{k: v for k, v in r.items() if not isinstance(v, dict)},
             **{f"{k}%": round(100 * v, 1) for k, v in r.get("split_frac", {}).items()}} for r in rows]
    print_table(flat, ["batch", "items_per_s", "step_s", "gpu_busy_pct", "nvml_util_pct", "peak_mem_gib",
                       "visual_tokens", "decode_wait%", "encode%", "compressor%", "llm%", "backward%", "optimizer%"])
    write_json("gpu_paper_step_tiny" if a.tiny else "gpu_paper_step",
               {"machine": machine(), "llm": "tiny" if a.tiny else f"qwen2-{a.llm}", "device": str(device),
                "tower": TINY_TOWER if a.tiny else SIGLIP_SO400M, "workers": a.workers, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
