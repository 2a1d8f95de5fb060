"""GPU parity: the project's pure-PyTorch selective scan and bidirectional block against mamba-ssm's CUDA kernel.

On fresh random inputs (a new seed every run unless ``--seed`` is given; the seed is recorded), for fp32 and
bf16, it compares forward outputs and every gradient of

1. the scan: ``selective_scan(..., backend="torch")`` vs ``backend="cuda"`` (mamba-ssm's ``selective_scan_fn``),
   both also against the pure-PyTorch scan run in float64 on the same (upcast) inputs;
2. the bidirectional block (``build_block`` with ``block: bi_ssm``: gated skip around a bi-Mamba-1 mixer),
   the same weights once on each backend (bf16 through autocast, the way training runs it), against the
   same block in float64 on the torch backend.

Relative error is ``||x - ref|| / ||ref||`` (computed in float64). Pass: CUDA vs torch below 1e-4 (fp32) and
1e-2 (bf16) for the output and for every gradient.

    python benchmarks/gpu_parity.py                 # needs CUDA and mamba-ssm (benchmarks/gpu_build_mamba.sh)
    python benchmarks/gpu_parity.py --seed 3 --quick

Writes results/benchmarks/gpu_parity.json and prints a table; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.config import CompressorConfig, build  # noqa: E402
from harness.model.blocks import build_block  # noqa: E402
from harness.model.ssm import selective_scan  # noqa: E402

TOL = {"fp32": 1e-4, "bf16": 1e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def rel(x: torch.Tensor | None, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (inf when x has a NaN or is missing, e.g. a gradient never computed)."""
    if x is None:
        return float("inf")
    x, ref = x.detach().double(), ref.detach().double()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def scan_inputs(b: int, d: int, n: int, L: int, dtype: torch.dtype, gen: torch.Generator,
                with_dz: bool = True) -> dict[str, torch.Tensor | None]:
    """Random scan inputs in mamba-ssm's layout. u, delta, z: (b, d, L) and B, C: (b, n, L) in ``dtype``;
    A (d, n), D, delta_bias (d,) in float32 (mamba-ssm keeps its weights in float32)."""
    dev = "cuda"

    def r(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, device=dev) * scale).to(dt)

    A = -torch.exp(torch.rand(d, n, generator=gen, device=dev) * 2.0 - 1.0) * torch.arange(
        1, n + 1, device=dev).float()  # S4D-like negative reals, jittered
    return {
        "u": r(b, d, L), "delta": r(b, d, L, scale=0.5), "A": A, "B": r(b, n, L), "C": r(b, n, L),
        "D": r(d, dt=torch.float32) if with_dz else None, "z": r(b, d, L) if with_dz else None,
        "delta_bias": r(d, scale=0.5, dt=torch.float32) - 2.0,
    }


def run_scan(inputs: dict[str, Any], gy: torch.Tensor, backend: str, dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward + backward of one backend on leaf copies of ``inputs`` (cast to ``dtype`` when given).
    Returns (y, {name: grad})."""
    leaves = {}
    for k, v in inputs.items():
        if v is None:
            leaves[k] = None
            continue
        t = v.detach().to(dtype) if dtype is not None else v.detach().clone()
        leaves[k] = t.requires_grad_()
    y = selective_scan(*(leaves[k] for k in SCAN_ARGS), delta_softplus=True, backend=backend)
    y.backward(gy.to(y.dtype))
    return y.detach(), {k: v.grad for k, v in leaves.items() if v is not None}  # a grad may be None


def check_scan(dtype_name: str, b: int, d: int, n: int, L: int, gen: torch.Generator, with_dz: bool) -> dict:
    dtype = DTYPES[dtype_name]
    inputs = scan_inputs(b, d, n, L, dtype, gen, with_dz)
    gy = torch.randn(b, d, L, generator=gen, device="cuda").to(dtype)
    y64, g64 = run_scan(inputs, gy, "torch", torch.float64)
    yt, gt = run_scan(inputs, gy, "torch")
    yc, gc = run_scan(inputs, gy, "cuda")
    row: dict[str, Any] = {"check": "scan", "dtype": dtype_name, "shape": f"b{b} d{d} n{n} L{L}",
                           "D_z": with_dz}
    errs = {"y": (rel(yt, y64), rel(yc, y64), rel(yc, yt))}
    for k in g64:
        errs[f"d{k}"] = (rel(gt[k], g64[k]), rel(gc[k], g64[k]), rel(gc[k], gt[k]))
    return finish(row, errs, TOL[dtype_name])


def finish(row: dict, errs: dict[str, tuple[float, float, float]], tol: float) -> dict:
    """Summarise per-tensor errors (torch vs f64, cuda vs f64, cuda vs torch) into one row."""
    row["errors"] = {k: {"torch_vs_f64": a, "cuda_vs_f64": b, "cuda_vs_torch": c} for k, (a, b, c) in errs.items()}
    row["y_cuda_vs_torch"] = errs["y"][2]
    grads = {k: v for k, v in errs.items() if k != "y"}
    worst = max(grads, key=lambda k: grads[k][2])
    row["max_grad_cuda_vs_torch"] = grads[worst][2]
    row["worst_grad"] = worst
    row["max_torch_vs_f64"] = max(v[0] for v in errs.values())
    row["max_cuda_vs_f64"] = max(v[1] for v in errs.values())
    row["tol"] = tol
    row["pass"] = bool(row["y_cuda_vs_torch"] < tol and row["max_grad_cuda_vs_torch"] < tol)
    return row


def make_block(d_model: int, backend: str, seed: int) -> torch.nn.Module:
    cfg = build(CompressorConfig, {"d_in": d_model, "d_model": d_model, "d_out": d_model, "block": "bi_ssm",
                                   "ssm": {"backend": backend}})
    torch.manual_seed(seed)
    return build_block(cfg).cuda()


def run_block(block: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor, autocast: bool
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.detach().clone().requires_grad_()
    block.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        y = block(x)
    y.backward(gy.to(y.dtype))
    grads = {"x": x.grad}
    grads.update({n: p.grad for n, p in block.named_parameters()})
    return y.detach(), grads


def check_block(dtype_name: str, b: int, d_model: int, L: int, gen: torch.Generator, seed: int) -> dict:
    """Bidirectional block, same weights on both backends. bf16 means bf16 autocast (fp32 master weights)."""
    bt = make_block(d_model, "torch", seed)
    bc, b64 = make_block(d_model, "cuda", seed), make_block(d_model, "torch", seed)
    bc.load_state_dict(bt.state_dict())
    b64.load_state_dict(bt.state_dict())
    b64.double()
    x = torch.randn(b, L, d_model, generator=gen, device="cuda")
    gy = torch.randn(b, L, d_model, generator=gen, device="cuda")
    ac = dtype_name == "bf16"
    y64, g64 = run_block(b64, x.double(), gy.double(), autocast=False)
    yt, gt = run_block(bt, x, gy, autocast=ac)
    yc, gc = run_block(bc, x, gy, autocast=ac)
    row: dict[str, Any] = {"check": "bi_ssm block", "dtype": dtype_name + ("(autocast)" if ac else ""),
                           "shape": f"b{b} D{d_model} L{L}", "D_z": True}
    errs = {"y": (rel(yt, y64), rel(yc, y64), rel(yc, yt))}
    for k in g64:
        errs[f"d{k}"] = (rel(gt[k], g64[k]), rel(gc[k], g64[k]), rel(gc[k], gt[k]))
    return finish(row, errs, TOL[dtype_name])


def run_all(seed: int, quick: bool = False) -> list[dict]:
    """Every check; returns one row per (check, dtype, shape)."""
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here, on both paths and the reference
    torch.backends.cudnn.allow_tf32 = False
    gen = torch.Generator(device="cuda").manual_seed(seed)
    scan_shapes = [(2, 64, 16, 300, True), (1, 256, 16, 2048, False)]
    if not quick:
        scan_shapes += [(2, 768, 16, 4096, True), (1, 2304, 16, 8192, True)]
    block_shapes = [(2, 64, 700)] + ([] if quick else [(1, 384, 4096)])
    rows = []
    for dt in ("fp32", "bf16"):
        for b, d, n, L, dz in scan_shapes:
            rows.append(check_scan(dt, b, d, n, L, gen, dz))
            print(f"  {short(rows[-1])}", flush=True)
        for b, dm, L in block_shapes:
            rows.append(check_block(dt, b, dm, L, gen, seed))
            print(f"  {short(rows[-1])}", flush=True)
    return rows


def short(r: dict) -> str:
    return (f"{r['check']} {r['dtype']} {r['shape']}: y {r['y_cuda_vs_torch']:.2e}, worst grad "
            f"{r['worst_grad']} {r['max_grad_cuda_vs_torch']:.2e} (tol {r['tol']:g}) {'PASS' if r['pass'] else 'FAIL'}")


def mamba_version() -> str | None:
    try:
        import mamba_ssm

        return mamba_ssm.__version__
    except Exception:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: fresh from os.urandom)")
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    ap.add_argument("--out", default="results/benchmarks", help="folder for gpu_parity.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_parity.py: no CUDA device")
    if mamba_version() is None:
        sys.exit("gpu_parity.py: mamba-ssm is not importable (run benchmarks/gpu_build_mamba.sh first)")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}, mamba-ssm {mamba_version()}, {torch.cuda.get_device_name(0)}")
    rows = run_all(seed, args.quick)
    print("\n## Parity: mamba-ssm CUDA vs pure-PyTorch (relative error)")
    print_table(rows, ["check", "dtype", "shape", "y_cuda_vs_torch", "max_grad_cuda_vs_torch", "worst_grad",
                       "max_torch_vs_f64", "max_cuda_vs_f64", "tol", "pass"])
    ok = all(r["pass"] for r in rows)
    write_json("gpu_parity", {"machine": machine(), "mamba_ssm": mamba_version(), "seed": seed,
                              "tolerances": TOL, "all_pass": ok, "rows": rows}, Path(args.out))
    print("ALL PASS" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
