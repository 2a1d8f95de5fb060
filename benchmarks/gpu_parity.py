"""GPU parity: the project's pure-PyTorch scans and bidirectional blocks against mamba-ssm's kernels.

On fresh random inputs (a new seed every run unless ``--seed`` is given; the seed is recorded), for fp32 and
bf16, it compares forward outputs and every gradient of

1. the Mamba-1 scan: ``selective_scan(..., backend="torch")`` vs ``backend="cuda"`` (``selective_scan_fn``);
2. the Mamba-2 scan: ``ssd_scan(..., backend="torch")`` vs ``"cuda"`` (the Triton ``mamba_chunk_scan_combined``);
3. the bidirectional block (``build_block`` with ``block: bi_ssm``, ``ssm.version`` 1 and 2), the same
   weights on the torch backend and on the GPU, once on mamba-ssm's fused path (``mamba_inner_fn`` /
   ``mamba_split_conv1d_scan_combined`` with causal-conv1d, what a GPU run takes) and once unfused (the
   scan kernel alone); bf16 through autocast, the way training runs it;

each also against the pure-PyTorch version in float64 on the same (upcast) inputs. Relative error is
``||x - ref|| / ||ref||`` (float64). Pass: GPU vs torch below 1e-4 (fp32) and 1e-2 (bf16), output and every
gradient. fp32 means TF32 off for torch matmuls and cuDNN. Triton's own fp32 dot precision comes from
``TRITON_F32_DEFAULT`` when its kernels compile, so the Mamba-2 checks run in three child processes at
once: fp32 with ``TRITON_F32_DEFAULT=ieee`` (the pass criterion), fp32 with the default (TF32 inside the
kernel: its error is shown beside, as information) and bf16 (what training runs). Each child writes its
rows as it goes; ``--deadline S`` stops the children after S seconds and keeps the rows they finished.

    python benchmarks/gpu_parity.py                 # needs CUDA, mamba-ssm, causal-conv1d (gpu_build_mamba.sh)
    python benchmarks/gpu_parity.py --seed 3 --quick
    python benchmarks/gpu_parity.py --only mamba2 --split 7 3 --deadline 525   # 13 children: ~5 min on an H200

Writes results/benchmarks/gpu_parity.json and prints a table; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.model.blocks import build_block  # noqa: E402
from harness.model.mamba import Mamba  # noqa: E402
from harness.model.mamba2 import Mamba2  # noqa: E402
from harness.model.mambamia_config import CompressorConfig  # noqa: E402
from harness.model.ssm import selective_scan  # noqa: E402
from harness.model.ssm.ssd import ssd_scan  # noqa: E402
from harness.schema import build  # noqa: E402

TOL = {"fp32": 1e-4, "bf16": 1e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
SSD_ARGS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")
CHUNK = 64  # the chunk size harness.model.mamba2 uses


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


def ssd_inputs(b: int, L: int, h: int, p: int, n: int, g: int, dtype: torch.dtype, gen: torch.Generator
               ) -> dict[str, torch.Tensor]:
    """Random SSD inputs in mamba-ssm's layout: x, z (b, L, h, p), dt (b, L, h), B, C (b, L, g, n) in
    ``dtype``; A, D, dt_bias (h,) in float32 (mamba-ssm keeps them in float32)."""
    def r(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(dt)

    A = -torch.exp(torch.rand(h, generator=gen, device="cuda") * 2.77)  # -(1..16), as Mamba2 initialises
    return {"x": r(b, L, h, p), "dt": r(b, L, h, scale=0.5), "A": A, "B": r(b, L, g, n), "C": r(b, L, g, n),
            "D": r(h, dt=torch.float32), "z": r(b, L, h, p), "dt_bias": r(h, scale=0.5, dt=torch.float32) - 2.0}


def run_ssd(inputs: dict[str, torch.Tensor], gy: torch.Tensor, backend: str, dtype: torch.dtype | None = None
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward + backward of ``ssd_scan`` on one backend, on leaf copies of ``inputs``."""
    leaves = {k: (v.detach().to(dtype) if dtype is not None else v.detach().clone()).requires_grad_()
              for k, v in inputs.items()}
    a = [leaves[k] for k in SSD_ARGS]
    y = ssd_scan(*a[:5], CHUNK, D=a[5], z=a[6], dt_bias=a[7], dt_softplus=True, backend=backend)
    y.backward(gy.to(y.dtype))
    return y.detach(), {k: v.grad for k, v in leaves.items()}


def check_ssd(dtype_name: str, b: int, L: int, h: int, p: int, n: int, g: int, gen: torch.Generator) -> dict:
    dtype = DTYPES[dtype_name]
    inputs = ssd_inputs(b, L, h, p, n, g, dtype, gen)
    gy = torch.randn(b, L, h, p, generator=gen, device="cuda").to(dtype)
    y64, g64 = run_ssd(inputs, gy, "torch", torch.float64)
    yt, gt = run_ssd(inputs, gy, "torch")
    yc, gc = run_ssd(inputs, gy, "cuda")
    row: dict[str, Any] = {"check": "ssd scan", "dtype": dtype_name, "shape": f"b{b} L{L} h{h} p{p} n{n} g{g}",
                           "D_z": True}
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


def make_block(d_model: int, backend: str, seed: int, version: int = 1, fused: bool = True) -> torch.nn.Module:
    cfg = build(CompressorConfig, {"d_in": d_model, "d_model": d_model, "d_out": d_model, "block": "bi_ssm",
                                   "ssm": {"backend": backend, "version": version}})
    torch.manual_seed(seed)
    block = build_block(cfg).cuda()
    for m in block.modules():
        if isinstance(m, (Mamba, Mamba2)):
            m.use_fused_kernels = fused
    return block


def mixer_path(block: torch.nn.Module, x: torch.Tensor) -> str:
    """Which path the block's mixer takes on ``x``: fused (mamba-ssm's fused function), scan kernel, torch."""
    m = next(m for m in block.modules() if isinstance(m, (Mamba, Mamba2)))
    if m.fused_path(x):
        return "fused"
    return "kernel" if m.fwd.backend == "cuda" else "torch"


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


def check_block(dtype_name: str, b: int, d_model: int, L: int, gen: torch.Generator, seed: int,
                version: int = 1, fused: bool = True) -> dict:
    """Bidirectional block, same weights on both backends. bf16 means bf16 autocast (fp32 master weights).
    ``fused``: the GPU block on mamba-ssm's fused path (True) or on the scan kernel alone (False)."""
    bt = make_block(d_model, "torch", seed, version)
    bc, b64 = make_block(d_model, "cuda", seed, version, fused), make_block(d_model, "torch", seed, version)
    bc.load_state_dict(bt.state_dict())
    b64.load_state_dict(bt.state_dict())
    b64.double()
    x = torch.randn(b, L, d_model, generator=gen, device="cuda")
    gy = torch.randn(b, L, d_model, generator=gen, device="cuda")
    ac = dtype_name == "bf16"
    y64, g64 = run_block(b64, x.double(), gy.double(), autocast=False)
    yt, gt = run_block(bt, x, gy, autocast=ac)
    yc, gc = run_block(bc, x, gy, autocast=ac)
    path = mixer_path(bc, x)
    if path != ("fused" if fused else "kernel"):
        raise RuntimeError(f"bi_ssm v{version} block took the {path!r} path, expected fused={fused} "
                           "(is causal-conv1d installed?)")
    row: dict[str, Any] = {"check": f"bi_ssm v{version} block {path}",
                           "dtype": dtype_name + ("(autocast)" if ac else ""),
                           "shape": f"b{b} D{d_model} L{L}", "D_z": True}
    errs = {"y": (rel(yt, y64), rel(yc, y64), rel(yc, yt))}
    for k in g64:
        errs[f"d{k}"] = (rel(gt[k], g64[k]), rel(gc[k], g64[k]), rel(gc[k], gt[k]))
    return finish(row, errs, TOL[dtype_name])


def no_tf32() -> None:
    """fp32 means fp32 for torch's matmuls and cuDNN, on both paths and the reference."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def triton_f32() -> str:
    return os.environ.get("TRITON_F32_DEFAULT") or "default (tf32)"


ROWS_FILE: Path | None = None  # a child writes its rows here after every check (a partial run keeps them)


def _add(rows: list[dict], check: Callable[[], dict], what: str, **extra: Any) -> None:
    """Run one check; an exception becomes a failed row naming it (the other checks still run)."""
    try:
        row = check()
    except Exception as e:  # a kernel refusing a shape, a dtype mismatch...: recorded, never skipped
        row = {"check": what, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", "pass": False}
        print(f"  {what} (triton f32 {extra.get('triton_f32')}): ERROR {row['error']}", flush=True)
        rows.append({**row, **extra})
    else:
        row.update(extra)
        rows.append(row)
        print(f"  {short(row)}", flush=True)
    if ROWS_FILE is not None:
        tmp = ROWS_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, default=str))
        tmp.replace(ROWS_FILE)


def run_mamba1(seed: int, quick: bool = False) -> list[dict]:
    """The Mamba-1 checks (no Triton involved); one row per (check, dtype, shape)."""
    no_tf32()
    gen = torch.Generator(device="cuda").manual_seed(seed)
    scan_shapes = [(2, 64, 16, 300, True), (1, 256, 16, 2048, False)]
    if not quick:
        scan_shapes += [(2, 768, 16, 4096, True), (1, 2304, 16, 8192, True)]
    block_shapes = [(2, 64, 700)] + ([] if quick else [(1, 384, 4096)])
    rows: list[dict] = []
    for dt in ("fp32", "bf16"):
        for b, d, n, L, dz in scan_shapes:
            _add(rows, partial(check_scan, dt, b, d, n, L, gen, dz), f"scan {dt} d{d} L{L}", triton_f32="n/a",
                 required=True)
        for b, dm, L in block_shapes:
            for fused in (True, False):
                _add(rows, partial(check_block, dt, b, dm, L, gen, seed, 1, fused),
                     f"bi_ssm v1 block fused={fused} {dt} D{dm} L{L}", triton_f32="n/a", required=True)
    return rows


def run_mamba2(seed: int, dtypes: list[str], quick: bool = False, part: tuple[int, int] = (0, 1)) -> list[dict]:
    """The Mamba-2 checks under this process's ``TRITON_F32_DEFAULT``. fp32 rows are required only with
    ``ieee``; bf16 rows always. Check ``i`` of a dtype draws its inputs from ``seed + 1 + 1000 i`` (the same
    inputs whatever the precision or split); ``part = (k, n)`` runs only the checks with ``i % n == k``."""
    no_tf32()
    ssd_shapes = [(2, 1000, 8, 16, 16, 1), (1, 3001, 16, 64, 64, 2)]
    if not quick:
        ssd_shapes += [(1, 4096, 144, 16, 16, 1)]  # the compressor's heads at D=1152 (headdim 16)
    block_shapes = [(2, 64, 700)] + ([] if quick else [(1, 384, 4096)])
    prec = triton_f32()
    rows: list[dict] = []
    for dt in dtypes:
        req = dt == "bf16" or prec == "ieee"
        checks: list[tuple[Callable[..., dict], tuple, str]] = [
            (check_ssd, (dt, *shape), f"ssd scan {dt} {shape}") for shape in ssd_shapes]
        checks += [(partial(check_block, seed=seed, version=2, fused=fused), (dt, b, dm, L),
                    f"bi_ssm v2 block fused={fused} {dt} D{dm} L{L}")
                   for b, dm, L in block_shapes for fused in (True, False)]
        for i, (fn, args, what) in enumerate(checks):
            if i % part[1] != part[0]:
                continue
            gen = torch.Generator(device="cuda").manual_seed(seed + 1 + 1000 * i)
            _add(rows, partial(fn, *args, gen=gen), what, triton_f32=prec, required=req, order=i)
    return rows


def _child_env(f32: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_F32_DEFAULT", None)
    if f32:
        env["TRITON_F32_DEFAULT"] = f32
    return env


def _child_rows(out: Path, dtypes: list[str], f32: str | None, rc: int | None) -> list[dict]:
    """The rows a child wrote (all, or those done before it stopped), plus a failed row when it did not
    finish: exit status ``rc``, or None when it was stopped at the deadline."""
    rows = json.loads(out.read_text()) if out.is_file() else []
    if rc != 0:
        why = "child process stopped at the --deadline" if rc is None else f"child process exited {rc}"
        rows.append({"check": f"Mamba-2 checks ({','.join(dtypes)})", "triton_f32": f32 or "default (tf32)",
                     "error": f"{why} after {len(rows)} rows", "required": True, "pass": False})
    return rows


def run_mamba2_child(seed: int, dtypes: list[str], f32: str | None, quick: bool) -> list[dict]:
    """``run_mamba2`` in a fresh process (Triton reads TRITON_F32_DEFAULT when it compiles a kernel)."""
    return run_mamba2_children(seed, [(dtypes, f32)], quick)


def run_mamba2_children(seed: int, jobs: list[tuple[list[str], str | None]], quick: bool,
                        deadline: float | None = None, split: tuple[int, int] = (1, 1)) -> list[dict]:
    """``run_mamba2`` child processes for each (dtypes, TRITON_F32_DEFAULT) job, all at once (most of their
    time is Triton compiling and autotuning the SSD kernels, one CPU core each): ``split`` = (n for ieee,
    n for the others) processes per job, each with every n-th check. Children still running ``deadline``
    seconds after the start are stopped; the rows they finished are kept."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for j, (dtypes, f32) in enumerate(jobs):
            n = split[0] if f32 == "ieee" else split[1]
            for k in range(n):
                out = Path(tmp) / f"rows{len(procs)}.json"
                cmd = [sys.executable, __file__, "--seed", str(seed), "--mamba2-child", ",".join(dtypes),
                       "--rows", str(out), "--mamba2-part", f"{k}/{n}"]
                proc = subprocess.Popen(cmd + (["--quick"] if quick else []), env=_child_env(f32))
                procs.append((j, dtypes, f32, proc, out))
        rows: list[tuple[int, dict]] = []
        for j, dtypes, f32, proc, out in procs:
            left = None if deadline is None else max(deadline - (time.monotonic() - t0), 1.0)
            try:
                rc: int | None = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
            rows += [(j, r) for r in _child_rows(out, dtypes, f32, rc)]
    return [r for _, r in sorted(rows, key=lambda jr: (jr[0], jr[1].get("order", 99)))]


def run_all(seed: int, quick: bool = False, only: str = "all", deadline: float | None = None,
            split: tuple[int, int] = (1, 1)) -> list[dict]:
    """Every check (or only one version's); returns one row per (check, dtype, shape, Triton precision)."""
    rows = run_mamba1(seed, quick) if only in ("all", "mamba1") else []
    if only in ("all", "mamba2"):
        rows += run_mamba2_children(seed, [(["fp32"], "ieee"), (["fp32"], None), (["bf16"], None)], quick, deadline,
                                    split)
    return rows


def short(r: dict) -> str:
    verdict = ("PASS" if r["pass"] else "FAIL") if r.get("required", True) else "info"
    return (f"{r['check']} {r['dtype']} {r['shape']} (triton f32 {r.get('triton_f32')}): y "
            f"{r['y_cuda_vs_torch']:.2e}, worst grad {r['worst_grad']} {r['max_grad_cuda_vs_torch']:.2e} "
            f"(tol {r['tol']:g}; vs f64: torch {r['max_torch_vs_f64']:.2e}, cuda {r['max_cuda_vs_f64']:.2e}) {verdict}")


def mamba_version() -> str | None:
    try:
        import mamba_ssm

        return mamba_ssm.__version__
    except Exception:
        return None


def causal_conv1d_version() -> str | None:
    try:
        import causal_conv1d

        return causal_conv1d.__version__
    except Exception:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: fresh from os.urandom)")
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    ap.add_argument("--out", default="results/benchmarks", help="folder for gpu_parity.json")
    ap.add_argument("--only", choices=["all", "mamba1", "mamba2"], default="all",
                    help="run one version's checks (the JSON then holds those rows only)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="stop the Mamba-2 child processes after this many seconds, keeping the rows they finished")
    ap.add_argument("--split", type=int, nargs=2, default=(1, 1), metavar=("IEEE", "OTHER"),
                    help="processes per Mamba-2 precision (fp32 ieee; fp32 default and bf16), each every n-th check")
    ap.add_argument("--mamba2-part", default="0/1", help=argparse.SUPPRESS)  # k/n, for run_mamba2_children
    ap.add_argument("--mamba2-child", default=None, help=argparse.SUPPRESS)  # dtypes, for run_mamba2_child
    ap.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mamba2_child:
        global ROWS_FILE
        ROWS_FILE = Path(args.rows)
        k, n = (int(v) for v in args.mamba2_part.split("/"))
        rows = run_mamba2(args.seed, args.mamba2_child.split(","), args.quick, (k, n))
        Path(args.rows).write_text(json.dumps(rows, default=str))
        return
    if not torch.cuda.is_available():
        sys.exit("gpu_parity.py: no CUDA device")
    if mamba_version() is None:
        sys.exit("gpu_parity.py: mamba-ssm is not importable (run benchmarks/gpu_build_mamba.sh first)")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}, mamba-ssm {mamba_version()}, {torch.cuda.get_device_name(0)}")
    rows = run_all(seed, args.quick, args.only, args.deadline, tuple(args.split))
    print("\n## Parity: mamba-ssm CUDA vs pure-PyTorch (relative error)")
    print_table(rows, ["check", "dtype", "shape", "triton_f32", "y_cuda_vs_torch", "max_grad_cuda_vs_torch",
                       "worst_grad", "max_torch_vs_f64", "max_cuda_vs_f64", "tol", "required", "pass"])
    ok = all(r["pass"] for r in rows if r["required"])
    write_json("gpu_parity", {
        "machine": machine(), "mamba_ssm": mamba_version(), "causal_conv1d": causal_conv1d_version(), "seed": seed,
        "tolerances": TOL, "tf32": {"torch.backends.cuda.matmul.allow_tf32": False,
                                    "torch.backends.cudnn.allow_tf32": False,
                                    "triton_f32_default": "per row (ieee for the required fp32 Mamba-2 rows)"},
        "only": args.only, "all_pass": ok, "rows": rows}, Path(args.out))
    print("ALL PASS" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
