"""GPU cost of the compressor by block type at realistic shapes, in one run.

Shapes: SigLIP-like features, D = 1152, 729 patches (27 x 27) per frame, 16 to 256 frames, one spatial
query every 27 patches (27 tokens per frame, one per patch row), one mixing layer, weighted pooling,
gated skip, batch 1, bf16 autocast with fp32 master weights. The mixed sequence holds T * (729 + 27) tokens
(12K at 16 frames, 194K at 256).

Variants (``--variants``):

    bi_ssm_cuda          bidirectional Mamba-1 block on mamba-ssm's CUDA selective scan (the paper's block)
    transformer          pre-norm self-attention (SDPA: flash attention in bf16) + MLP, 16 heads
    bi_ssm_torch         the bidirectional block on the project's pure-PyTorch scan (as it is now)
    bi_ssm_torch_before  the same with the pure-PyTorch scan and Mamba.forward as they were before the GPU
                         work (frozen copies below), to show before/after in one run
    bi_ssm_cuda_before   bi_ssm_cuda with Mamba.forward as it was before (in_proj then a strided transpose)
    identity             no mixing (in_proj + query insertion + pooling + out_proj only): the floor
    *_compiled           any of the above through torch.compile (compile time reported separately)

For each (variant, frames): forward (no grad) and forward+backward median time (CUDA events, warm-up
first), and peak memory above what was allocated before the call. ``--profile`` adds the top CUDA kernels
of one fwd+bwd at 128 frames for the SSM and Transformer blocks.

    python benchmarks/gpu_compressor_scaling.py
    python benchmarks/gpu_compressor_scaling.py --frames 16 64 --variants bi_ssm_cuda transformer

Writes results/benchmarks/gpu_compressor_scaling.json. Targets (issue 8): bi_ssm_cuda >= 5x faster than the
Transformer at 128 frames and beyond (fwd and fwd+bwd), and linear in frames.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.model.mamba import Mamba  # noqa: E402
from harness.model.registry import build_compressor  # noqa: E402
from harness.model.ssm import scan_torch  # noqa: E402

D, PATCHES, PERIOD = 1152, 729, 27
BASE_VARIANTS = {
    "bi_ssm_cuda": ("bi_ssm", "cuda"),
    "transformer": ("transformer", "auto"),
    "bi_ssm_torch": ("bi_ssm", "torch"),
    "bi_ssm_torch_before": ("bi_ssm", "torch"),
    "bi_ssm_cuda_before": ("bi_ssm", "cuda"),
    "identity": ("identity", "auto"),
}


# ---------------------------------------------------------------------------------------------- timing
def cuda_time(fn: Callable[[], Any], warmup: int = 2, repeat: int = 5) -> tuple[float, list[float]]:
    """Median milliseconds of ``fn`` between CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times), times


def peak_gib(fn: Callable[[], Any]) -> float:
    """Peak GPU memory (GiB) allocated by one call of ``fn`` above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


# ---------------------------------------------------------------------------------------------- models
def make_compressor(variant: str, n_layers: int) -> torch.nn.Module:
    base = variant.removesuffix("_compiled")
    block, backend = BASE_VARIANTS[base]
    torch.manual_seed(0)
    comp = build_compressor({
        "d_in": D, "d_model": D, "d_out": D, "block": block, "n_heads": 16, "pooling": "weighted",
        "spatial": {"period": PERIOD, "n_layers": n_layers}, "ssm": {"backend": backend},
    }).cuda()
    return comp


class _Before:
    """Context: run a ``*_before`` variant with the code as it was before the GPU work of issue 8: the
    pure-PyTorch scan (``BaselineSelectiveScan``) and ``Mamba.forward`` (``baseline_mamba_forward``)."""

    def __init__(self, variant: str):
        self.active = "_before" in variant

    def __enter__(self):
        if self.active:
            self.saved = scan_torch._SelectiveScan, Mamba.forward
            scan_torch._SelectiveScan = BaselineSelectiveScan
            Mamba.forward = baseline_mamba_forward
        return self

    def __exit__(self, *exc):
        if self.active:
            scan_torch._SelectiveScan, Mamba.forward = self.saved


def baseline_mamba_forward(self: Mamba, x: torch.Tensor) -> torch.Tensor:
    """Frozen copy of harness.model.mamba.Mamba.forward as of the start of issue 8."""
    xz = self.in_proj(x).transpose(1, 2)  # (B, 2Di, L), strided along L
    xs, z = xz.chunk(2, dim=1)
    y = self.fwd(xs, z)
    if self.bwd is not None:
        y_b = self.bwd(xs.flip(-1), z.flip(-1)).flip(-1)
        y = (y + y_b) * 0.5
    return self.out_proj(y.transpose(1, 2))


def bench_one(variant: str, T: int, n_layers: int, repeat: int) -> dict[str, Any]:
    comp = make_compressor(variant, n_layers)
    row: dict[str, Any] = {"variant": variant, "frames": T, "tokens_in": T * PATCHES,
                           "seq_len": T * (PATCHES + PERIOD), "tokens_out": comp.count_tokens(T, PATCHES)}
    model = comp
    if variant.endswith("_compiled"):
        model = torch.compile(comp, dynamic=False)
    g = torch.Generator(device="cuda").manual_seed(T)
    feats = torch.randn(1, T, PATCHES, D, generator=g, device="cuda").to(torch.bfloat16)

    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(feats).tokens

    def fwd_bwd():
        comp.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(feats).tokens.float().square().mean()
        loss.backward()

    with _Before(variant):
        try:
            if variant.endswith("_compiled"):
                t0 = time.perf_counter()
                fwd()
                fwd_bwd()
                torch.cuda.synchronize()
                row["compile_s"] = time.perf_counter() - t0
            row["fwd_ms"], _ = cuda_time(fwd, repeat=repeat)
            row["fwd_peak_gib"] = peak_gib(fwd)
            row["fwd_bwd_ms"], _ = cuda_time(fwd_bwd, repeat=repeat)
            row["fwd_bwd_peak_gib"] = peak_gib(fwd_bwd)
        except torch.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as e:  # a compile failure etc.: record it, keep going
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    torch.cuda.empty_cache()
    return row


def profile_top(variant: str, T: int, n_layers: int, top: int = 15) -> list[dict[str, Any]]:
    """Top CUDA kernels (total ms) of one fwd+bwd."""
    from torch.profiler import ProfilerActivity, profile

    comp = make_compressor(variant, n_layers)
    feats = torch.randn(1, T, PATCHES, D, device="cuda").to(torch.bfloat16)

    def step():
        comp.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            comp(feats).tokens.float().square().mean().backward()

    with _Before(variant):
        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_time_total > 0]
    evs.sort(key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3
    rows = [{"kernel": e.key[:90], "calls": e.count, "ms": e.self_device_time_total / 1e3} for e in evs[:top]]
    print(f"\n### profile {variant} T={T}: total kernel time {total:.1f} ms")
    print_table(rows, ["kernel", "calls", "ms"])
    torch.cuda.empty_cache()
    return [{"total_ms": total}] + rows


# -------------------------------------------------------------------------- the scan before the GPU work
def _baseline_scan_block(a, b, h0):
    """Frozen copy of scan_torch._scan_block as of the start of issue 8."""
    S = a.shape[0]
    K = 1 << max(0, round(math.log2(max(1.0, math.sqrt(S / 2)))))
    nc = -(-S // K)
    pad = nc * K - S
    if pad:
        a = torch.cat([a, a.new_ones((pad, *a.shape[1:]))])
        b = torch.cat([b, b.new_zeros((pad, *b.shape[1:]))])
    a = a.view(nc, K, *a.shape[1:])
    b = b.view(nc, K, *b.shape[1:])
    s = b[:, 0].clone()
    for k in range(1, K):
        torch.addcmul(b[:, k], a[:, k], s, out=s)
    decay = a.prod(dim=1)
    carry = torch.empty_like(s)
    carry[0] = h0
    for c in range(1, nc):
        torch.addcmul(s[c - 1], decay[c - 1], carry[c - 1], out=carry[c])
    h_end = torch.addcmul(s[-1], decay[-1], carry[-1])
    h = torch.empty_like(b)
    torch.addcmul(b[:, 0], a[:, 0], carry, out=h[:, 0])
    for k in range(1, K):
        torch.addcmul(b[:, k], a[:, k], h[:, k - 1], out=h[:, k])
    return h.view(nc * K, *h.shape[2:])[:S], h_end


def _baseline_block_inputs(u, dt, A, B, sl):
    a = torch.mul(dt[sl].unsqueeze(-1), A).exp_()
    bu = torch.mul((dt[sl] * u[sl]).unsqueeze(-1), B[sl].unsqueeze(2))
    return a, bu


class BaselineSelectiveScan(torch.autograd.Function):
    """Frozen copy of scan_torch._SelectiveScan as of the start of issue 8 (superchunks of 512 steps,
    three flip copies per superchunk in the backward pass)."""

    SUPERCHUNK = 512

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        S_ = BaselineSelectiveScan.SUPERCHUNK
        L, bsz, d = u.shape
        h = u.new_zeros(bsz, d, A.shape[1])
        y = torch.empty_like(u)
        starts = []
        for s0 in range(0, L, S_):
            sl = slice(s0, min(L, s0 + S_))
            starts.append(h)
            a, bu = _baseline_block_inputs(u, dt, A, B, sl)
            hs, h = _baseline_scan_block(a, bu, h)
            y[sl] = torch.einsum("sbdn,sbn->sbd", hs, C[sl])
        ctx.save_for_backward(u, dt, A, B, C, torch.stack(starts))
        return y

    @staticmethod
    def backward(ctx, gy):
        S_ = BaselineSelectiveScan.SUPERCHUNK
        u, dt, A, B, C, starts = ctx.saved_tensors
        L = u.shape[0]
        gu, gdt, gB, gC = (torch.empty_like(t) for t in (u, dt, B, C))
        gA = torch.zeros_like(A)
        lam_next = torch.zeros_like(starts[0])
        a_next = torch.zeros_like(starts[0])
        blocks = list(range(0, L, S_))
        for i in reversed(range(len(blocks))):
            sl = slice(blocks[i], min(L, blocks[i] + S_))
            a, bu = _baseline_block_inputs(u, dt, A, B, sl)
            hs, _ = _baseline_scan_block(a, bu, starts[i])
            src = gy[sl].unsqueeze(-1) * C[sl].unsqueeze(2)
            a_rev = torch.cat([a_next.unsqueeze(0), a.flip(0)[:-1]])
            lam = _baseline_scan_block(a_rev, src.flip(0), lam_next)[0].flip(0)
            h_prev = torch.cat([starts[i].unsqueeze(0), hs[:-1]])
            g_dtA = lam * h_prev * a
            dtu = dt[sl] * u[sl]
            g_dtu = torch.einsum("sbdn,sbn->sbd", lam, B[sl])
            gC[sl] = torch.einsum("sbd,sbdn->sbn", gy[sl], hs)
            gB[sl] = torch.einsum("sbdn,sbd->sbn", lam, dtu)
            gu[sl] = g_dtu * dt[sl]
            gdt[sl] = g_dtu * u[sl] + torch.einsum("sbdn,dn->sbd", g_dtA, A)
            gA += torch.einsum("sbdn,sbd->dn", g_dtA, dt[sl])
            lam_next, a_next = lam[0], a[0]
        return gu, gdt, gA, gB, gC


# ---------------------------------------------------------------------------------------------- summary
def loglog_slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) on log(frames): 1.0 is linear, 2.0 quadratic."""
    if len(points) < 2:
        return None
    xs = [math.log(t) for t, _ in points]
    ys = [math.log(v) for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["variant"], r["frames"]): r for r in rows}
    out: dict[str, Any] = {"speedup_vs_transformer": [], "linearity": {}}
    for (v, T), r in sorted(by.items()):
        if v == "transformer" or "fwd_ms" not in r:
            continue
        tr = by.get(("transformer", T))
        if tr and "fwd_ms" in tr:
            out["speedup_vs_transformer"].append({
                "variant": v, "frames": T, "fwd_x": tr["fwd_ms"] / r["fwd_ms"],
                "fwd_bwd_x": tr["fwd_bwd_ms"] / r["fwd_bwd_ms"],
                "fwd_mem_x": tr["fwd_peak_gib"] / max(r["fwd_peak_gib"], 1e-9),
                "fwd_bwd_mem_x": tr["fwd_bwd_peak_gib"] / max(r["fwd_bwd_peak_gib"], 1e-9)})
    for v in sorted({r["variant"] for r in rows}):
        pts = sorted((r["frames"], r) for r in rows if r["variant"] == v and "fwd_ms" in r)
        big = [(T, r) for T, r in pts if T >= 32]
        out["linearity"][v] = {
            "fwd_slope": loglog_slope([(T, r["fwd_ms"]) for T, r in big]),
            "fwd_bwd_slope": loglog_slope([(T, r["fwd_bwd_ms"]) for T, r in big]),
            "fwd_bwd_growth_per_doubling": {
                f"{a[0]}->{b[0]}": b[1]["fwd_bwd_ms"] / a[1]["fwd_bwd_ms"]
                for a, b in zip(pts, pts[1:]) if b[0] == 2 * a[0]},
        }
    sp = [s for s in out["speedup_vs_transformer"] if s["variant"] == "bi_ssm_cuda" and s["frames"] >= 128]
    out["target"] = {
        "bi_ssm_cuda_min_fwd_x_at_128plus": min((s["fwd_x"] for s in sp), default=None),
        "bi_ssm_cuda_min_fwd_bwd_x_at_128plus": min((s["fwd_bwd_x"] for s in sp), default=None),
        "target_x": 5.0,
        "bi_ssm_cuda_fwd_bwd_slope": out["linearity"].get("bi_ssm_cuda", {}).get("fwd_bwd_slope"),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--variants", nargs="+",
                    default=["bi_ssm_cuda", "bi_ssm_cuda_before", "transformer", "identity", "bi_ssm_torch",
                             "bi_ssm_torch_before", "bi_ssm_cuda_compiled"])
    ap.add_argument("--compile-frames", type=int, nargs="+", default=[128],
                    help="frame counts at which *_compiled variants run (each shape compiles anew)")
    ap.add_argument("--n-layers", type=int, default=1, help="mixing layers in the spatial stage")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (median)")
    ap.add_argument("--budget-s", type=float, default=8.0,
                    help="skip a variant's larger sizes once one fwd+bwd took more than this")
    ap.add_argument("--profile", action="store_true", help="top kernels of bi_ssm_cuda / transformer at 128 frames")
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_compressor_scaling.py: no CUDA device")
    for v in args.variants:
        if v.removesuffix("_compiled") not in BASE_VARIANTS:
            sys.exit(f"gpu_compressor_scaling.py: unknown variant {v!r}; allowed: {', '.join(BASE_VARIANTS)} "
                     "(each optionally with _compiled)")
    torch.backends.cuda.matmul.allow_tf32 = True  # what training would use (bf16 autocast anyway)
    info = machine()
    print(f"machine: {info}")
    rows = []
    for v in args.variants:
        last = 0.0
        for T in sorted(args.frames):
            if v.endswith("_compiled") and T not in args.compile_frames:
                continue
            if last * 2.2 > args.budget_s:
                rows.append({"variant": v, "frames": T, "skipped": f"previous size took {last:.1f} s"})
                continue
            r = bench_one(v, T, args.n_layers, args.repeat if T <= 128 else max(3, args.repeat - 2))
            rows.append(r)
            last = r.get("fwd_bwd_ms", 0.0) / 1e3
            print(f"  {v:22s} T={T:4d}: " + ", ".join(f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}"
                                                       for k in r if k not in ("variant", "frames")), flush=True)
    prof = {}
    if args.profile:
        for v in ("bi_ssm_cuda", "transformer"):
            prof[v] = profile_top(v, 128, args.n_layers)
    summary = summarise(rows)
    print("\n## Compressor cost by block (bf16 autocast, D=1152, 729 patches/frame, period 27, batch 1)")
    print_table(rows, ["variant", "frames", "seq_len", "fwd_ms", "fwd_bwd_ms", "fwd_peak_gib", "fwd_bwd_peak_gib",
                       "compile_s", "error", "skipped"])
    print("\n## Speed-up over the Transformer block")
    print_table(summary["speedup_vs_transformer"], ["variant", "frames", "fwd_x", "fwd_bwd_x", "fwd_mem_x",
                                                    "fwd_bwd_mem_x"])
    print("\nlinearity (log-log slope, frames >= 32): "
          + ", ".join(f"{v}: fwd {s['fwd_slope']:.3f} fwd+bwd {s['fwd_bwd_slope']:.3f}"
                      for v, s in summary["linearity"].items() if s["fwd_slope"] is not None))
    print(f"targets: {summary['target']}")
    write_json("gpu_compressor_scaling", {
        "machine": info, "mamba_ssm": _mamba_version(),
        "setup": {"d_model": D, "patches_per_frame": PATCHES, "period": PERIOD, "n_layers": args.n_layers,
                  "batch": 1, "precision": "bf16 autocast, fp32 weights", "transformer_heads": 16,
                  "pooling": "weighted", "repeat": args.repeat, "timing": "median of CUDA-event times"},
        "rows": rows, "summary": summary, "profile": prof}, Path(args.out))


def _mamba_version() -> str | None:
    try:
        import mamba_ssm

        return mamba_ssm.__version__
    except Exception:
        return None


if __name__ == "__main__":
    main()
