"""CPU cost of the compressor: the compiled scan (numba, what ``backend: auto`` runs on a CPU) and the chunked
pure-PyTorch scan, each against the sequential reference, and every block type from 1K to 64K tokens
(forward and forward+backward; blocks on the compiled scan, bi-SSM also on the pure-PyTorch one), in one run.

    python benchmarks/compressor_cpu.py            # full sweep, ~10 minutes on 2 cores
    python benchmarks/compressor_cpu.py --quick    # 1K-8K tokens, a minute

Prints two tables and writes results/benchmarks/compressor_cpu.json. Targets (issues 2 and 23): the scan
>= 20x faster than the sequential reference at 16K tokens (judged on the compiled scan, the one that runs;
the chunked one is shown beside it); SSM blocks linear (time at 4L within 4.5x of L).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, timeit, write_json  # noqa: E402

from harness.model.registry import build_compressor  # noqa: E402
from harness.model.ssm import selective_scan, selective_scan_ref  # noqa: E402

BLOCKS = ["bi_ssm", "uni_ssm", "transformer", "conv", "identity", "bi_ssm@torch"]  # @torch: the pure-PyTorch scan


def scan_inputs(L: int, d: int, n: int, requires_grad: bool = False):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, d, L, generator=g)
    delta = torch.randn(1, d, L, generator=g) * 0.5
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(1, n, L, generator=g)
    C = torch.randn(1, n, L, generator=g)
    if requires_grad:
        u.requires_grad_()
        delta.requires_grad_()
    return u, delta, A, B, C


def bench_scan(lengths: list[int], ref_max: int, d: int, n: int) -> list[dict]:
    rows = []
    for L in lengths:
        args = scan_inputs(L, d, n)
        ga = scan_inputs(L, d, n, requires_grad=True)
        row = {"tokens": L}
        for name, be in (("compiled", "cpu"), ("chunked", "torch")):
            row[f"{name}_fwd_ms"] = 1e3 * timeit(
                lambda a=args, be=be: selective_scan(*a, delta_softplus=True, backend=be), repeat=3)
            row[f"{name}_fwd_bwd_ms"] = 1e3 * timeit(
                lambda a=ga, be=be: selective_scan(*a, delta_softplus=True, backend=be).sum().backward(), repeat=3)
        if ref_max >= L:
            t_ref = timeit(lambda a=args: selective_scan_ref(*a, delta_softplus=True), repeat=1, warmup=0)
            row.update(ref_fwd_ms=1e3 * t_ref, speedup=t_ref / (1e-3 * row["compiled_fwd_ms"]),
                       chunked_speedup=t_ref / (1e-3 * row["chunked_fwd_ms"]))
        rows.append(row)
        print(f"  scan L={L}: {row}", flush=True)
    return rows


def bench_blocks(lengths: list[int], d_model: int, budget_s: float) -> list[dict]:
    rows = []
    P = 64
    for block in BLOCKS:
        torch.manual_seed(0)
        kind, _, backend = block.partition("@")
        comp = build_compressor({"block": kind, "d_in": d_model, "d_model": d_model, "d_out": d_model,
                                 "spatial": {"period": 16, "n_layers": 1}, "ssm": {"backend": backend or "auto"}})
        last = 0.0
        for L in lengths:
            T = L // P
            row = {"block": block, "tokens": L}
            if last * 4.5 > budget_s:  # the next size would blow the time budget: say so, do not guess
                row["skipped"] = f"previous size took {last:.1f}s"
                rows.append(row)
                continue
            x = torch.randn(1, T, P, d_model)
            with torch.no_grad():
                t_f = timeit(lambda x=x, comp=comp: comp(x), repeat=3 if L <= 16384 else 1)

            def fb(x=x, comp=comp):
                comp.zero_grad(set_to_none=True)
                comp(x).tokens.square().mean().backward()

            t_fb = timeit(fb, repeat=3 if L <= 16384 else 1)
            last = t_fb
            row.update(fwd_ms=1e3 * t_f, fwd_bwd_ms=1e3 * t_fb)
            rows.append(row)
            print(f"  {block} L={L}: fwd {1e3 * t_f:.1f} ms, fwd+bwd {1e3 * t_fb:.1f} ms", flush=True)
    # growth ratio: time(4L) / time(L)
    for r in rows:
        prev = next((q for q in rows if q["block"] == r["block"] and q["tokens"] * 4 == r["tokens"]), None)
        if prev and "fwd_ms" in r and "fwd_ms" in prev:
            r["fwd_growth_4x"] = r["fwd_ms"] / prev["fwd_ms"]
            r["fwd_bwd_growth_4x"] = r["fwd_bwd_ms"] / prev["fwd_bwd_ms"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1K-8K tokens only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--d-model", type=int, default=64, help="compressor width (tiny preset: 64)")
    ap.add_argument("--budget-s", type=float, default=60.0,
                    help="skip a block's larger sizes once one fwd+bwd would exceed this many seconds")
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [1024, 2048, 4096, 8192] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    d_inner, d_state = 2 * args.d_model, 16
    print(f"machine: {machine()}")
    print(f"selective scan, d_inner={d_inner}, d_state={d_state}:")
    scan = bench_scan([L for L in lengths if L <= 16384] if args.quick else lengths,
                      ref_max=16384, d=d_inner, n=d_state)
    print(f"compressor blocks, d_model={args.d_model}, 64 patches/frame, spatial period 16, 1 layer:")
    blocks = bench_blocks(lengths, args.d_model, args.budget_s)
    print("\n## Selective scan: compiled (numba) and chunked (pure PyTorch) vs the sequential reference")
    print_table(scan, ["tokens", "ref_fwd_ms", "compiled_fwd_ms", "speedup", "compiled_fwd_bwd_ms", "chunked_fwd_ms",
                       "chunked_speedup", "chunked_fwd_bwd_ms"])
    print("\n## Compressor by block type")
    print_table(blocks, ["block", "tokens", "fwd_ms", "fwd_bwd_ms", "fwd_growth_4x", "fwd_bwd_growth_4x", "skipped"])
    at16k = next((r for r in scan if r["tokens"] == 16384 and "speedup" in r), None)
    ssm_growth = [r.get("fwd_bwd_growth_4x") for r in blocks
                  if r["block"] in ("bi_ssm", "uni_ssm") and r.get("fwd_bwd_growth_4x")]
    targets = {
        "scan_speedup_at_16k": at16k["speedup"] if at16k else None,
        "scan_speedup_target": 20.0,
        "ssm_max_growth_4x": max(ssm_growth) if ssm_growth else None,
        "ssm_growth_target": 4.5,
    }
    print(f"\ntargets: {targets}")
    write_json("compressor_cpu", {"machine": machine(), "config": vars(args), "scan": scan, "blocks": blocks,
                                  "targets": targets}, Path(args.out))


if __name__ == "__main__":
    main()
