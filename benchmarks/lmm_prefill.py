"""Time to first token and peak memory of the LMM with and without compression.

For each frame count (default 16, 64, 256) the full path runs on random encoder features:
compressor (or none = "vanilla": every patch token goes to the LLM) -> projector -> LLM prefill ->
first greedy token. Reported: median time to first token over ``--repeats`` runs, peak memory of one
run, visual tokens the LLM sees, and vanilla / compressed ratios.

Scales (random weights; nothing is downloaded):

* ``tiny`` (default on CPU): the tiny preset (64-d 2-layer Qwen2, tiny encoder grid 8x8 patches x 64-d).
* ``7b`` (default on CUDA): a Qwen2-7B-shaped LLM (``harness.model.presets.seven_b_config``) in bf16
  with SDPA, SigLIP-shaped features (24x24 = 576 patches x 1152-d) and a paper-like compressor
  (d_model 1024, one bi-SSM layer, a query per 24 patches). Vanilla at many frames may run out of
  memory: that is recorded as ``"oom": true`` (the paper's point).

    python benchmarks/lmm_prefill.py                       # CPU, tiny
    python benchmarks/lmm_prefill.py --device cuda         # GPU, 7B-shaped
    python benchmarks/lmm_prefill.py --device cuda --frames 16 64 --llm-layers 4   # quicker look

Writes ``results/benchmarks/lmm_prefill_<device>_<scale>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.config import ModelConfig, build  # noqa: E402
from harness.model.lmm import VideoLMM  # noqa: E402
from harness.model.presets import build_llm, seven_b_config  # noqa: E402
from harness.model.tokenizer import build_word_tokenizer  # noqa: E402

PROMPT = ("which object appeared only briefly ?\nA. red circle\nB. blue square\nC. green cross\n"
          "D. yellow triangle\nAnswer with the option's letter from the given choices directly.")

SCALES: dict[str, dict[str, Any]] = {
    "tiny": {"P": 64, "D": 64, "dtype": "float32",
             "compressor": {"d_in": 64, "d_model": 64, "d_out": 64, "block": "bi_ssm",
                            "spatial": {"period": 16, "n_layers": 2}}},
    "7b": {"P": 576, "D": 1152, "dtype": "bfloat16",
           "compressor": {"d_in": 1152, "d_model": 1024, "d_out": 1024, "block": "bi_ssm",
                          "spatial": {"period": 24, "n_layers": 1}}},
}


class PeakRSS:
    """Samples this process's resident memory every ~1 ms (CPU peak-memory measurement)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def build_lmm(scale: str, compress: bool, device: torch.device, llm_layers: int) -> VideoLMM:
    s = SCALES[scale]
    tok = build_word_tokenizer([PROMPT])
    comp = {**s["compressor"], "enabled": compress}
    if scale == "tiny":
        cfg = build(ModelConfig, {"compressor": comp})
        llm = build_llm(cfg.llm, tok)
    else:
        cfg = build(ModelConfig, {"compressor": comp,
                                  "llm": {"preset": "paper", "random_init": True, "dtype": s["dtype"],
                                          "hidden_size": 3584, "n_heads": 28, "n_kv_heads": 4,
                                          "n_layers": 28, "intermediate_size": 18944}})
        over = {"num_hidden_layers": llm_layers} if llm_layers else {}
        with torch.device(device):
            llm = build_llm(cfg.llm, config_override=seven_b_config("qwen2", vocab_size=max(len(tok), 1024),
                                                                    **over))
    m = VideoLMM(cfg, llm, tok)
    m.compressor.to(dtype=torch.float32)  # the compressor runs in fp32 (autocast on GPU below)
    return m.to(device).eval()


@torch.no_grad()
def ttft(model: VideoLMM, feats: torch.Tensor, device: torch.device) -> float:
    """Seconds from encoder features to the first greedy token (compressor + projector + prefill)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else torch.autocast("cpu", enabled=False))
    sync()
    t0 = time.perf_counter()
    with amp:
        vis, _ = model.encode_video(feats)
        embeds, mask, starts = model.assemble([vis[0]], [PROMPT], [[]])
        h = model.hidden_states(embeds, mask)
        logits = model.llm.get_output_embeddings()(h[:, starts[0] - 1])
        _ = int(logits.argmax(-1))
    sync()
    return time.perf_counter() - t0


def measure(scale: str, frames: int, compress: bool, device: torch.device, repeats: int, llm_layers: int
            ) -> dict[str, Any]:
    s = SCALES[scale]
    rec: dict[str, Any] = {"frames": frames, "compression": compress}
    try:
        model = build_lmm(scale, compress, device, llm_layers)
        rec["llm_visual_tokens"] = model.count_visual_tokens(frames, s["P"])
        feats = torch.randn(1, frames, s["P"], s["D"], device=device)
        times = []
        if device.type == "cuda":
            ttft(model, feats, device)  # warm-up
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            for _ in range(repeats):
                times.append(ttft(model, feats, device))
            rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            rec["activation_peak_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
        else:
            # the CPU allocator keeps freed pages, so the peak is taken on the first (warm-up) run
            with PeakRSS() as pk:
                ttft(model, feats, device)
            for _ in range(repeats):
                times.append(ttft(model, feats, device))
            rec["activation_peak_gib"] = (pk.peak - pk.base) / 2**30
            rec["peak_mem_gib"] = pk.peak / 2**30
        rec["ttft_ms"] = statistics.median(times) * 1000
        rec["oom"] = False
    except torch.OutOfMemoryError:
        rec.update({"oom": True, "ttft_ms": None, "peak_mem_gib": None})
    finally:
        model = None  # noqa: F841
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--scale", choices=list(SCALES), default=None, help="tiny (CPU default) | 7b (CUDA default)")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    ap.add_argument("--llm-layers", type=int, default=0, help="7b scale: fewer decoder layers (0 = all 28)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmarks/lmm_prefill_<dev>_<scale>.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    scale = args.scale or ("7b" if device.type == "cuda" else "tiny")
    torch.manual_seed(0)
    rows = []
    for f in args.frames:
        for compress in (True, False):
            r = measure(scale, f, compress, device, args.repeats, args.llm_layers)
            rows.append(r)
            print(json.dumps(r), flush=True)
    ratios = []
    for f in args.frames:
        c = next(r for r in rows if r["frames"] == f and r["compression"])
        v = next(r for r in rows if r["frames"] == f and not r["compression"])
        ratio = {"frames": f, "token_ratio": v.get("llm_visual_tokens", 0) / max(1, c.get("llm_visual_tokens", 1))}
        if c.get("ttft_ms") and v.get("ttft_ms"):
            ratio["ttft_ratio"] = v["ttft_ms"] / c["ttft_ms"]
        if c.get("activation_peak_gib") and v.get("activation_peak_gib"):
            ratio["activation_mem_ratio"] = v["activation_peak_gib"] / max(c["activation_peak_gib"], 1e-9)
        ratio["vanilla_oom"] = v.get("oom", False)
        ratios.append(ratio)
    print(f"\n{'frames':>6} {'mode':>10} {'LLM vis tok':>11} {'TTFT ms':>9} {'peak GiB':>9} {'act GiB':>8}")
    for r in rows:
        mode = "compressed" if r["compression"] else "vanilla"
        if r.get("oom"):
            print(f"{r['frames']:>6} {mode:>10} {r.get('llm_visual_tokens', '-'):>11} {'OOM':>9}")
            continue
        print(f"{r['frames']:>6} {mode:>10} {r['llm_visual_tokens']:>11} {r['ttft_ms']:>9.1f} "
              f"{r['peak_mem_gib']:>9.3f} {r['activation_peak_gib']:>8.3f}")
    print("\nratios vanilla / compressed:")
    for q in ratios:
        print("  " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in q.items()))
    out = Path(args.out or f"results/benchmarks/lmm_prefill_{device.type}_{scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": str(device), "scale": scale, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "host": platform.node(), "repeats": args.repeats, "llm_layers": args.llm_layers or None,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "ratios": ratios}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
