"""The bi-SSM compressor against the best Transformer of its width, on fused kernels (issue 21).

Same shapes as ``gpu_compressor_scaling.py``: D = 1152, 729 patches per frame, a query every 27 patches, one
mixing layer, weighted pooling, gated skip, batch 1, bf16 autocast with fp32 master weights.

1. **SDPA alone** (``--sdpa``): bf16 q, k, v of one sequence at the 128-frame length (96,768 tokens) for the
   head layouts 16 x 72 (today's Transformer compressor), 9 x 128 and 18 x 64, each SDPA backend forced in
   turn (flash, cuDNN, memory-efficient); forward and forward+backward. The fastest backend of each layout
   (by forward+backward) is what that layout's Transformer variant is forced to below.
2. **Compressor variants** (``--variants``, each optionally ``_compiled``: torch.compile, same treatment
   for both sides):

       transformer_16x72   today's baseline (16 heads of 72), SDPA left to choose its kernel
       transformer_9x128   9 heads of 128, SDPA forced to that layout's fastest backend
       transformer_18x64   18 heads of 64, likewise
       bi_ssm_v1_unfused   bi-Mamba-1 on mamba-ssm's scan kernel alone (today's SSM path)
       bi_ssm_v1_fused     bi-Mamba-1 through mamba_inner_fn + causal-conv1d (what a GPU run now takes)
       bi_ssm_v2_unfused   bi-Mamba-2: SSD Triton scan, nn.Conv1d
       bi_ssm_v2_fused     bi-Mamba-2 through mamba_split_conv1d_scan_combined + causal-conv1d
       bi_ssm_v2_*_stacked the same with both directions in one launch (``Mamba2.stack_directions``: the
                           reversed sequence's heads stacked beside the forward heads, issue 30)
       *_c256              SSD chunks of 256 steps instead of the mixer's 64 (mamba-ssm's default; same
                           parameters and math, another tiling)
       identity            no mixing: the floor (projections, query insertion, pooling)

   For each (variant, frames): median forward and forward+backward time (CUDA events, warm-up first, every
   repeat kept) and peak memory above what was allocated before the call.
3. **Kernel breakdown** (``--profile``): one fwd+bwd at 128 frames of each named variant, CUDA kernel time
   by category (scan, conv, attention, GEMM, flip/copy, elementwise/other) and the top kernels.

The "fair" Transformer is the faster of transformer_9x128 and transformer_18x64 at 128 frames (fwd+bwd).
Targets (issue 21), fwd+bwd: bi-SSM >= 5x faster than the fair Transformer at 128 frames with no more
peak memory, >= 8x at 256, log-log slope of time on frames (64..256) <= 1.05.

    python benchmarks/gpu_fair_baseline.py --sdpa --tag a
    python benchmarks/gpu_fair_baseline.py --variants bi_ssm_v1_fused transformer_9x128 --frames 128 --tag b

Writes results/benchmarks/gpu_fair_baseline_<tag>.json after every row (a killed run keeps what it measured).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402
from gpu_compressor_scaling import PATCHES, PERIOD, D, loglog_slope, peak_gib  # noqa: E402
from gpu_parity import rel  # noqa: E402  (the parity criterion: ||x - ref|| / ||ref||, inf on NaN)

from harness.model.mamba import Mamba  # noqa: E402
from harness.model.mamba2 import Mamba2  # noqa: E402
from harness.model.registry import build_compressor  # noqa: E402

LAYOUTS = {"16x72": (16, 72), "9x128": (9, 128), "18x64": (18, 64)}
SDPA_BACKENDS = ("flash", "cudnn", "efficient")
VARIANTS: dict[str, dict[str, Any]] = {
    "transformer_16x72": {"block": "transformer", "layout": "16x72", "force_sdpa": False},
    "transformer_9x128": {"block": "transformer", "layout": "9x128", "force_sdpa": True},
    "transformer_18x64": {"block": "transformer", "layout": "18x64", "force_sdpa": True},
    "bi_ssm_v1_unfused": {"block": "bi_ssm", "version": 1, "fused": False},
    "bi_ssm_v1_fused": {"block": "bi_ssm", "version": 1, "fused": True},
    "bi_ssm_v2_unfused": {"block": "bi_ssm", "version": 2, "fused": False},
    "bi_ssm_v2_fused": {"block": "bi_ssm", "version": 2, "fused": True},
    "bi_ssm_v2_unfused_stacked": {"block": "bi_ssm", "version": 2, "fused": False, "stacked": True},
    "bi_ssm_v2_fused_stacked": {"block": "bi_ssm", "version": 2, "fused": True, "stacked": True},
    "bi_ssm_v2_fused_c256": {"block": "bi_ssm", "version": 2, "fused": True, "chunk": 256},
    "bi_ssm_v2_fused_stacked_c256": {"block": "bi_ssm", "version": 2, "fused": True, "stacked": True, "chunk": 256},
    "identity": {"block": "identity"},
}
CATEGORIES = (  # first match wins; kernel names lower-cased
    ("scan", ("selective_scan", "chunk_scan", "chunk_state", "state_passing", "bmm_chunk", "chunk_cumsum")),
    ("conv", ("causal_conv1d", "conv_depthwise", "conv1d")),
    ("attention", ("sdpa", "flash", "fmha", "attention", "attn")),
    ("gemm", ("nvjet", "gemm", "cutlass", "xmma", "cublas", "sm90_")),
    ("flip/copy", ("flip", "copy", "cat", "transpose")),
)


# ------------------------------------------------------------------------------------------ timing helpers
def time_all(fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
    """Every repeat's milliseconds of ``fn`` between CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e))
    return out


def set_sdpa(backend: str | None) -> None:
    """Allow only ``backend`` (flash | cudnn | efficient) for SDPA; None restores the default choice."""
    torch.backends.cuda.enable_flash_sdp(backend in (None, "flash"))
    torch.backends.cuda.enable_cudnn_sdp(backend in (None, "cudnn"))
    torch.backends.cuda.enable_mem_efficient_sdp(backend in (None, "efficient"))
    torch.backends.cuda.enable_math_sdp(backend is None)


# ----------------------------------------------------------------------------------------- 1. SDPA alone
def sdpa_bench(T: int, repeat: int) -> list[dict[str, Any]]:
    L = T * (PATCHES + PERIOD)
    rows = []
    for name, (H, Dh) in LAYOUTS.items():
        g = torch.Generator(device="cuda").manual_seed(H)
        q, k, v = (torch.randn(1, H, L, Dh, generator=g, device="cuda", dtype=torch.bfloat16).requires_grad_()
                   for _ in range(3))
        gy = torch.randn(1, H, L, Dh, generator=g, device="cuda", dtype=torch.bfloat16)
        for be in SDPA_BACKENDS:
            row: dict[str, Any] = {"layout": name, "heads": H, "head_dim": Dh, "backend": be, "seq_len": L}
            set_sdpa(be)
            try:
                def fw(q=q, k=k, v=v):
                    with torch.no_grad():
                        F.scaled_dot_product_attention(q, k, v)

                def fb(q=q, k=k, v=v, gy=gy):
                    q.grad = k.grad = v.grad = None
                    F.scaled_dot_product_attention(q, k, v).backward(gy)

                row["fwd_ms"] = statistics.median(time_all(fw, 1, repeat))

                row["fwd_bwd_ms"] = statistics.median(time_all(fb, 1, repeat))
            except Exception as e:  # a backend refusing this head size: recorded
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            set_sdpa(None)
            rows.append(row)
            print(f"  sdpa {name} {be}: " + (f"fwd {row['fwd_ms']:.1f} ms, fwd+bwd {row['fwd_bwd_ms']:.1f} ms"
                                             if "error" not in row else row["error"]), flush=True)
    return rows


def best_backends(sdpa_rows: list[dict[str, Any]]) -> dict[str, str]:
    """layout -> its fastest SDPA backend by fwd+bwd."""
    best: dict[str, str] = {}
    for layout in LAYOUTS:
        ok = [r for r in sdpa_rows if r["layout"] == layout and "fwd_bwd_ms" in r]
        if ok:
            best[layout] = min(ok, key=lambda r: r["fwd_bwd_ms"])["backend"]
    return best


# --------------------------------------------------------------------------------------- 2. the variants
def make_model(variant: str) -> torch.nn.Module:
    spec = VARIANTS[variant.removesuffix("_compiled")]
    heads = LAYOUTS[spec["layout"]][0] if "layout" in spec else 16
    torch.manual_seed(0)
    comp = build_compressor({
        "d_in": D, "d_model": D, "d_out": D, "block": spec["block"], "n_heads": heads, "pooling": "weighted",
        "spatial": {"period": PERIOD, "n_layers": 1}, "ssm": {"backend": "cuda", "version": spec.get("version", 1)},
    }).cuda()
    for m in comp.modules():
        if isinstance(m, (Mamba, Mamba2)):
            m.use_fused_kernels = spec["fused"]
        if isinstance(m, Mamba2):
            m.stack_directions = spec.get("stacked", False)
            for br in (m.fwd, m.bwd):
                br.chunk_size = spec.get("chunk", br.chunk_size)
    return comp


def check_path(comp: torch.nn.Module, variant: str, feats: torch.Tensor) -> str | None:
    """The mixer's path ('fused' / 'kernel'), checked against the variant's name."""
    spec = VARIANTS[variant.removesuffix("_compiled")]
    mixers = [m for m in comp.modules() if isinstance(m, (Mamba, Mamba2))]
    if not mixers:
        return None
    path = "fused" if mixers[0].fused_path(feats) else "kernel"
    if path != ("fused" if spec["fused"] else "kernel"):
        raise RuntimeError(f"{variant}: the mixer takes the {path} path (is causal-conv1d installed?)")
    return path


def bench_one(variant: str, T: int, repeat: int, backends: dict[str, str]) -> dict[str, Any]:
    spec = VARIANTS[variant.removesuffix("_compiled")]
    comp = make_model(variant)
    row: dict[str, Any] = {"variant": variant, "frames": T, "seq_len": T * (PATCHES + PERIOD)}
    forced = backends.get(spec.get("layout", "")) if spec.get("force_sdpa") else None
    if spec.get("force_sdpa"):
        row["sdpa"] = forced or "default (no SDPA result)"
    g = torch.Generator(device="cuda").manual_seed(T)
    feats = torch.randn(1, T, PATCHES, D, generator=g, device="cuda").to(torch.bfloat16)
    model = torch.compile(comp, dynamic=False) if variant.endswith("_compiled") else comp

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(feats).tokens

    def fwd_bwd():
        comp.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(feats).tokens.float().square().mean()
        loss.backward()

    set_sdpa(forced)
    try:
        row["path"] = check_path(comp, variant, feats)
        if variant.endswith("_compiled"):
            t0 = time.perf_counter()
            fwd()
            fwd_bwd()
            torch.cuda.synchronize()
            row["compile_s"] = time.perf_counter() - t0
        fw = time_all(fwd, 2, repeat)
        row["fwd_ms"], row["fwd_ms_all"] = statistics.median(fw), fw
        row["fwd_peak_gib"] = peak_gib(fwd)
        fb = time_all(fwd_bwd, 2, repeat)
        row["fwd_bwd_ms"], row["fwd_bwd_ms_all"] = statistics.median(fb), fb
        row["fwd_bwd_peak_gib"] = peak_gib(fwd_bwd)
    except torch.OutOfMemoryError:
        row["error"] = "OOM"
    except Exception as e:  # a compile failure, a kernel refusing a shape: recorded, the rest still runs
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        set_sdpa(None)
    return row


# --------------------------------------------------------------------------------- 3. kernel breakdown
def category(name: str) -> str:
    n = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in n for k in keys):
            return cat
    return "elementwise/other"


def profile_one(variant: str, T: int, backends: dict[str, str], top: int = 12) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    spec = VARIANTS[variant]
    comp = make_model(variant)
    feats = torch.randn(1, T, PATCHES, D, device="cuda").to(torch.bfloat16)
    set_sdpa(backends.get(spec.get("layout", "")) if spec.get("force_sdpa") else None)

    def step():
        comp.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            comp(feats).tokens.float().square().mean().backward()

    try:
        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
    finally:
        set_sdpa(None)
    evs = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in evs) / 1e3
    cats: dict[str, float] = {}
    for e in evs:
        cats[category(e.key)] = cats.get(category(e.key), 0.0) + e.self_device_time_total / 1e3
    evs.sort(key=lambda e: e.self_device_time_total, reverse=True)
    kernels = [{"kernel": e.key[:90], "category": category(e.key), "calls": e.count,
                "ms": e.self_device_time_total / 1e3} for e in evs[:top]]
    print(f"\n### {variant}, T={T}: kernel time {total:.1f} ms; " +
          ", ".join(f"{c} {v:.1f}" for c, v in sorted(cats.items(), key=lambda x: -x[1])))
    print_table(kernels, ["kernel", "category", "calls", "ms"])
    return {"variant": variant, "frames": T, "total_ms": total, "by_category_ms": cats, "top": kernels}


# ------------------------------------------------------------------------- parity of the stacked launch
def parity_stacked(seed: int) -> list[dict[str, Any]]:
    """Output and every gradient of one bi-Mamba-2 mixer on each path against the pure-PyTorch twin and the
    stacked paths against their two-launch twins (same kernels, so stacking alone should change nothing).
    Bars as ``gpu_parity.py``: 1e-4 fp32 (run with ``TRITON_F32_DEFAULT=ieee``), 1e-2 bf16 autocast."""
    from harness.model.mambamia_config import SSMConfig

    paths = {"twin": ("torch", False, False), "kernel": ("cuda", False, False), "fused": ("cuda", True, False),
             "kernel_stacked": ("cuda", False, True), "fused_stacked": ("cuda", True, True)}
    rows = []
    for dtype in ("fp32", "bf16"):
        for b, L, d in ((2, 700, 64), (1, 4096, 384)):
            torch.manual_seed(seed)
            m = Mamba2(d, SSMConfig(version=2, backend="cuda")).cuda()
            x = torch.randn(b, L, d, device="cuda", requires_grad=True)
            gy = torch.randn(b, L, d, device="cuda")
            got = {}
            for name, (backend, fused, stacked) in paths.items():
                m.fwd.backend = m.bwd.backend = backend
                m.use_fused_kernels, m.stack_directions = fused, stacked
                m.zero_grad(set_to_none=True)
                x.grad = None
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    y = m(x)
                y.float().backward(gy)
                got[name] = {"out": y.detach().float(), "x": x.grad.clone(),
                             **{k: p.grad.clone() for k, p in m.named_parameters()}}
            bar = 1e-4 if dtype == "fp32" else 1e-2
            for name, ref in (("kernel", "twin"), ("fused", "twin"), ("kernel_stacked", "twin"),
                              ("fused_stacked", "twin"), ("kernel_stacked", "kernel"), ("fused_stacked", "fused")):
                errs = {k: rel(v, got[ref][k]) for k, v in got[name].items()}
                worst = max((k for k in errs if k != "out"), key=errs.get)
                rows.append({"path": name, "against": ref, "dtype": dtype, "shape": f"b{b} L{L} D{d}",
                             "out": errs["out"], "worst_grad": worst, "worst_grad_err": errs[worst], "bar": bar,
                             "pass": max(errs.values()) <= bar})
                print(f"  parity {name:15s} vs {ref:6s} {dtype} b{b} L{L} D{d}: out {errs['out']:.2e}, "
                      f"worst grad {worst} {errs[worst]:.2e} -> {'PASS' if rows[-1]['pass'] else 'FAIL'}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------- 4. summary
def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups and memory ratios of every SSM variant against the fair and today's Transformer, the
    slopes, and the targets."""
    by = {(r["variant"], r["frames"]): r for r in rows if "fwd_bwd_ms" in r}
    frames = sorted({T for _, T in by})
    fair_choice = {}
    for suffix in ("", "_compiled"):
        cands = [f"transformer_{lay}{suffix}" for lay in ("9x128", "18x64")
                 if (f"transformer_{lay}{suffix}", 128) in by]
        if cands:
            fair_choice[suffix or "_eager"] = min(cands, key=lambda v: by[(v, 128)]["fwd_bwd_ms"])
    ratios = []
    for (v, T), r in sorted(by.items()):
        if not v.startswith(("bi_ssm", "identity")):
            continue
        suffix = "_compiled" if v.endswith("_compiled") else ""
        fair = fair_choice.get(suffix or "_eager")
        for base_name, base in (("fair", fair), ("today", f"transformer_16x72{suffix}")):
            b = by.get((base, T)) if base else None
            if b:
                ratios.append({"variant": v, "frames": T, "against": base_name, "baseline": base,
                               "fwd_x": b["fwd_ms"] / r["fwd_ms"], "fwd_bwd_x": b["fwd_bwd_ms"] / r["fwd_bwd_ms"],
                               "fwd_bwd_mem_ratio": r["fwd_bwd_peak_gib"] / b["fwd_bwd_peak_gib"]})
    slopes = {}
    for v in sorted({v for v, _ in by}):
        pts = [(T, by[(v, T)]) for T in frames if (v, T) in by and T >= 64]
        if len(pts) >= 2:
            slopes[v] = {"frames": [T for T, _ in pts], "fwd_slope": loglog_slope([(T, r["fwd_ms"]) for T, r in pts]),
                         "fwd_bwd_slope": loglog_slope([(T, r["fwd_bwd_ms"]) for T, r in pts])}
    targets = []
    for r in ratios:
        if r["against"] != "fair" or not r["variant"].startswith("bi_ssm"):
            continue
        if r["frames"] == 128:
            targets.append({"variant": r["variant"], "target": "fwd+bwd >= 5x the fair Transformer at 128 frames",
                            "value": r["fwd_bwd_x"], "goal": 5.0, "met": r["fwd_bwd_x"] >= 5.0})
            targets.append({"variant": r["variant"], "target": "fwd+bwd peak memory <= the fair Transformer's, 128",
                            "value": r["fwd_bwd_mem_ratio"], "goal": 1.0, "met": r["fwd_bwd_mem_ratio"] <= 1.0})
        if r["frames"] == 256:
            targets.append({"variant": r["variant"], "target": "fwd+bwd >= 8x the fair Transformer at 256 frames",
                            "value": r["fwd_bwd_x"], "goal": 8.0, "met": r["fwd_bwd_x"] >= 8.0})
    for v, s in slopes.items():
        if v.startswith("bi_ssm") and s["fwd_bwd_slope"] is not None and 256 in s["frames"]:
            targets.append({"variant": v, "target": "fwd+bwd log-log slope on frames (64..256) <= 1.05",
                            "value": s["fwd_bwd_slope"], "goal": 1.05, "met": s["fwd_bwd_slope"] <= 1.05})
    return {"fair_transformer": fair_choice, "ratios": ratios, "slopes": slopes, "targets": targets}


def summarise_with_roofline(rows: list[dict[str, Any]], gpu: str) -> dict[str, Any]:
    return {**summarise(rows), "roofline": rooflines(rows, gpu)}


PEAKS = {"H200": (989.4e12, 4.8e12), "H100": (989.4e12, 3.35e12)}  # dense bf16 FLOP/s, HBM bytes/s (datasheets)


def layer_bounds(variant: str, T: int) -> dict[str, float] | None:
    """What one mixing layer must compute and move at T frames, fwd+bwd (its roofline's inputs).

    FLOPs: the GEMMs at 6 per weight per token (fwd 2, bwd 4); the SSD scan per direction and token
    2Q(N + HP) + 4NHP (intra-chunk C B^T and its product with x, the chunk states and their read-out), times
    3 for fwd+bwd; attention 12 L D per token for fwd+bwd (torchtitan's convention, no causal halving).
    Bytes: bf16 activations crossing kernel boundaries in a design that fuses every elementwise op into its
    neighbour, fwd (bi-SSM: x, the norm, the projection written once and read once per direction, each
    direction's y, the average, the output; Transformer: x, the norm, qkv, the attention output, the MLP
    hidden), backward twice the forward's traffic; weights once per pass. None for non-mixing variants."""
    spec = VARIANTS[variant.removesuffix("_compiled")]
    L, d = T * (PATCHES + PERIOD), D
    if spec["block"] == "bi_ssm" and spec.get("version") == 2:
        di, n, hd, q = 2 * d, 16, 16, spec.get("chunk", 64)
        h = di // hd
        c = 2 * di + 2 * n + h
        weights = d * d + d * c + di * d  # gate, in_proj, out_proj
        scan = 2 * q * (n + h * hd) + 4 * n * h * hd
        flops = L * (6 * weights + 2 * 3 * scan)
        elems = L * 3 * (9 * d + 3 * c + 6 * di)
    elif spec["block"] == "transformer":
        weights = 4 * d * d + 8 * d * d + 2 * d * d  # qkv + out, MLP (4x), the two gates
        flops = L * (6 * weights + 12 * L * d)
        elems = L * 3 * (12 * d + 3 * d + 4 * d)
    else:
        return None
    return {"flops": float(flops), "bytes": float(2 * elems + 3 * 2 * weights)}


def rooflines(rows: list[dict[str, Any]], gpu: str) -> list[dict[str, Any]]:
    """Each mixing variant's fwd+bwd layer time (the row minus the identity row at the same frames: the
    projections, query insertion and pooling around the layer) against its compute and memory bounds."""
    peak_flops, peak_bw = next((v for k, v in PEAKS.items() if k in gpu), PEAKS["H100"])
    floor = {r["frames"]: r["fwd_bwd_ms"] for r in rows if r["variant"] == "identity" and "fwd_bwd_ms" in r}
    out = []
    for r in rows:
        b = layer_bounds(r["variant"], r["frames"]) if "fwd_bwd_ms" in r else None
        if b is None or r["frames"] not in floor:
            continue
        layer_ms = r["fwd_bwd_ms"] - floor[r["frames"]]
        t_flops, t_bytes = 1e3 * b["flops"] / peak_flops, 1e3 * b["bytes"] / peak_bw
        out.append({"variant": r["variant"], "frames": r["frames"], "layer_ms": layer_ms,
                    "tflop": b["flops"] / 1e12, "gbytes": b["bytes"] / 1e9, "compute_bound_ms": t_flops,
                    "memory_bound_ms": t_bytes, "roofline_ms": max(t_flops, t_bytes),
                    "of_roofline": max(t_flops, t_bytes) / layer_ms if layer_ms > 0 else None,
                    "bound_by": "compute" if t_flops >= t_bytes else "memory",
                    "peaks": {"bf16_flops": peak_flops, "hbm_bytes_s": peak_bw}})
    return out


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for mod in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="*", default=[
        "transformer_16x72", "transformer_9x128", "transformer_18x64", "bi_ssm_v1_unfused", "bi_ssm_v1_fused",
        "bi_ssm_v2_unfused", "bi_ssm_v2_fused", "identity"], help="see the list above; add _compiled to compile")
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--compile-frames", type=int, nargs="+", default=[128],
                    help="frame counts at which *_compiled variants run (each shape compiles anew)")
    ap.add_argument("--sdpa", action="store_true", help="run the SDPA-alone comparison (picks each layout's backend)")
    ap.add_argument("--backends", default="", help="layout=backend,... instead of --sdpa, e.g. 9x128=cudnn,18x64=flash")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (3 at 256 frames)")
    ap.add_argument("--profile", nargs="*", default=[], help="variants to profile at 128 frames")
    ap.add_argument("--parity-stacked", action="store_true",
                    help="first, parity of the stacked bi-Mamba-2 paths (run under TRITON_F32_DEFAULT=ieee)")
    ap.add_argument("--tag", default="a", help="JSON name suffix: gpu_fair_baseline_<tag>.json")
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_fair_baseline.py: no CUDA device")
    for v in args.variants + args.profile:
        if v.removesuffix("_compiled") not in VARIANTS:
            sys.exit(f"gpu_fair_baseline.py: unknown variant {v!r}; allowed: {', '.join(VARIANTS)} (+ _compiled)")
    torch.backends.cuda.matmul.allow_tf32 = True  # what training would use (bf16 autocast anyway)
    payload: dict[str, Any] = {
        "machine": machine(), "versions": versions(),
        "setup": {"d_model": D, "patches_per_frame": PATCHES, "period": PERIOD, "n_layers": 1, "batch": 1,
                  "precision": "bf16 autocast, fp32 weights", "pooling": "weighted", "repeat": args.repeat,
                  "timing": "median of CUDA-event times after 2 warm-up calls (every repeat kept)"},
        "sdpa": [], "backends": {}, "rows": [], "profile": [], "summary": {}, "parity_stacked": []}
    print(f"machine: {payload['machine']}, {payload['versions']}")
    name = f"gpu_fair_baseline_{args.tag}"
    if args.parity_stacked:
        import os

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        payload["parity_stacked"] = parity_stacked(int.from_bytes(os.urandom(4), "little"))
        payload["triton_f32_default"] = os.environ.get("TRITON_F32_DEFAULT", "(unset: tf32)")
        torch.backends.cuda.matmul.allow_tf32 = True
        write_json(name, payload, Path(args.out))
    if args.sdpa:
        payload["sdpa"] = sdpa_bench(128, 3)
        torch.cuda.empty_cache()
        payload["backends"] = best_backends(payload["sdpa"])
    if args.backends:
        payload["backends"].update(dict(kv.split("=") for kv in args.backends.split(",")))
    print(f"SDPA backend per layout: {payload['backends']}")
    # the kernel breakdown first: short, and kept when a long variant list meets the time limit
    for v in args.profile:
        payload["profile"].append(profile_one(v, 128, payload["backends"]))
        torch.cuda.empty_cache()
        write_json(name, payload, Path(args.out))
    for v in args.variants:
        for T in sorted(args.frames):
            if v.endswith("_compiled") and T not in args.compile_frames:
                continue
            r = bench_one(v, T, args.repeat if T <= 128 else max(3, args.repeat - 2), payload["backends"])
            torch.cuda.empty_cache()
            payload["rows"].append(r)
            print(f"  {v:26s} T={T:4d}: " + ", ".join(
                f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in r
                if k not in ("variant", "frames", "fwd_ms_all", "fwd_bwd_ms_all")), flush=True)
            payload["summary"] = summarise_with_roofline(payload["rows"], torch.cuda.get_device_name())
            write_json(name, payload, Path(args.out))
    s = payload["summary"] = summarise_with_roofline(payload["rows"], torch.cuda.get_device_name())
    print("\n## rows")
    print_table(payload["rows"], ["variant", "frames", "fwd_ms", "fwd_bwd_ms", "fwd_peak_gib", "fwd_bwd_peak_gib",
                                  "sdpa", "path", "compile_s", "error"])
    print(f"\nfair Transformer: {s['fair_transformer']}")
    print_table(s["ratios"], ["variant", "frames", "against", "baseline", "fwd_x", "fwd_bwd_x", "fwd_bwd_mem_ratio"])
    print_table([{"variant": v, **x} for v, x in s["slopes"].items()], ["variant", "fwd_slope", "fwd_bwd_slope"])
    print_table(s["targets"], ["variant", "target", "value", "goal", "met"])
    print_table(s["roofline"], ["variant", "frames", "layer_ms", "compute_bound_ms", "memory_bound_ms", "of_roofline",
                                "bound_by"])
    write_json(name, payload, Path(args.out))


if __name__ == "__main__":
    main()
