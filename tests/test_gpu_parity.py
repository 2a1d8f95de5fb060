"""GPU parity: mamba-ssm's CUDA selective scan and Triton SSD scan vs the project's pure-PyTorch scans, and
the bidirectional Mamba-1 / Mamba-2 blocks on mamba-ssm's fused path (with causal-conv1d) and on the scan
kernel alone, forward and every gradient, fp32 (< 1e-4) and bf16 (< 1e-2), on fresh random inputs.
fp32 SSD checks run in a child process with ``TRITON_F32_DEFAULT=ieee`` (Triton reads it when it compiles).

Runs only where CUDA and mamba-ssm (with its compiled extension) are present; skipped with the reason
otherwise. The checks themselves live in benchmarks/gpu_parity.py (the same code writes
results/benchmarks/gpu_parity.json).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import harness.model.ssm as ssm
import harness.model.ssm.ssd as ssm_ssd
from harness.model.ssm import have_cuda_kernels

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not have_cuda_kernels(),
    reason="needs a CUDA GPU and mamba-ssm with its CUDA extension (bash benchmarks/gpu_build_mamba.sh)"
    if torch.cuda.is_available() else "needs a CUDA GPU (and mamba-ssm)",
)


def _parity_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_parity.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("gpu_parity", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def parity():
    return _parity_module()


def _seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(2, 64, 16, 300, True), (1, 256, 16, 2048, False), (1, 768, 16, 4096, True)])
def test_scan_parity(parity, dtype, shape):
    b, d, n, L, dz = shape
    seed = _seed()
    gen = torch.Generator(device="cuda").manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    row = parity.check_scan(dtype, b, d, n, L, gen, dz)
    assert row["pass"], f"seed {seed}: {row['errors']}"
    # the errors are real numbers, not NaN, and the reference itself is close to both paths
    assert row["max_cuda_vs_f64"] < 5 * parity.TOL[dtype], f"seed {seed}: {row['errors']}"


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_bidirectional_block_parity(parity, dtype, fused):
    if fused and ssm.cuda_mamba_inner_fn() is None:
        pytest.skip("needs causal-conv1d for mamba-ssm's fused path")
    seed = _seed()
    gen = torch.Generator(device="cuda").manual_seed(seed)
    parity.no_tf32()
    row = parity.check_block(dtype, 2, 128, 1500, gen, seed % 2**31, 1, fused)
    assert row["pass"], f"seed {seed}: {row['errors']}"
    assert row["check"] == f"bi_ssm v1 block {'fused' if fused else 'kernel'}"


def test_mamba2_parity_bf16_and_ieee_fp32(parity):
    """The SSD scan and the bi-Mamba-2 block (fused and not): bf16 here, fp32 in a child process with
    Triton's fp32 dots in IEEE precision."""
    if ssm_ssd.cuda_split_conv1d_scan_fn() is None:
        pytest.skip("needs causal-conv1d for mamba-ssm's fused Mamba-2 path")
    seed = _seed() % 2**31
    rows = parity.run_mamba2(seed, ["bf16"], quick=True)
    rows += parity.run_mamba2_child(seed, ["fp32"], "ieee", quick=True)
    bad = [r for r in rows if not r["pass"]]
    assert not bad, f"seed {seed}: {bad}"
    assert {r["triton_f32"] for r in rows if r["dtype"] == "fp32"} == {"ieee"}


def test_parity_detects_a_wrong_kernel(parity, monkeypatch):
    """The check can fail: a scan that drops the D skip term must not pass."""
    real = ssm.cuda_selective_scan_fn()

    def broken(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        return real(u, delta, A, B, C, None, z, delta_bias, delta_softplus)

    monkeypatch.setattr(ssm, "cuda_selective_scan_fn", lambda: broken)
    gen = torch.Generator(device="cuda").manual_seed(_seed())
    row = parity.check_scan("fp32", 1, 64, 16, 256, gen, True)
    assert not row["pass"]


def test_stacked_bi_ssd_launch_matches_the_two_launch_paths():
    """``Mamba2.stack_directions`` (both directions as one launch over 2H heads) against the two-launch
    paths and the pure-PyTorch twin, bf16 autocast (bar 1e-2): benchmarks/gpu_fair_baseline.parity_stacked."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_fair_baseline.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("gpu_fair_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [r for r in mod.parity_stacked(seed=0) if r["dtype"] == "bf16"]
    same = [r for r in rows if r["against"] != "twin"]  # stacked vs its own two-launch path: same kernels
    assert same and all(r["pass"] for r in same), [(r["path"], r["worst_grad"], r["worst_grad_err"]) for r in same]
