"""The compiled CPU scan (numba) against the float64 reference: output and every gradient, float32."""

import numpy as np
import pytest
import torch

import harness.model.ssm.scan_numba as scan_numba
from harness.model.ssm import selective_scan, selective_scan_ref
from harness.model.ssm.scan_torch import _SelectiveScan

NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _inputs(b, d, n, L, seed, a_scale=3.0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * a_scale - 0.1
    return [r(b, d, L), r(b, d, L), A, r(b, n, L), r(b, n, L), r(d), r(b, d, L), r(d)]


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


# lengths around the checkpoint interval K; widths that cut into one or several channel blocks
@pytest.mark.parametrize("b,d,n,L", [(1, 3, 2, 1), (2, 13, 5, 63), (3, 40, 16, 64), (2, 8, 4, 65),
                                     (1, 128, 16, 200), (5, 20, 7, 130)])
def test_compiled_scan_matches_float64_reference(b, d, n, L):
    ref_in = [t.requires_grad_() for t in _inputs(b, d, n, L, seed=L + d)]
    y_ref = selective_scan_ref(*ref_in, delta_softplus=True)
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, ref_in, gy)
    x32 = [t.detach().float().requires_grad_() for t in ref_in]
    y = selective_scan(*x32, delta_softplus=True, backend="cpu")
    assert y.dtype == torch.float32
    assert _rel(y, y_ref) < 1e-5
    g = torch.autograd.grad(y, x32, gy.float())
    for name, a, r in zip(NAMES, g, g_ref):
        assert _rel(a, r) < 1e-4, name


def test_inline_exp_is_float32_exact_and_decays_to_zero():
    """_exp_row's polynomial exp against float64 exp over the range the scan sees (dt A <= 0), to below
    float32's normal range, where it must give ~0 and never a NaN or a wrapped-around power of two."""
    x = np.concatenate([-np.logspace(-8, 2.3, 4000), [0.0, -87.0, -88.0, -150.0, -1e6]]).astype(np.float32)
    out = np.empty_like(x)
    scan_numba._exp_row(np.ones_like(x), x, out, np.empty(x.shape, np.int32))
    want = np.exp(x.astype(np.float64))
    ok = want > 1e-37
    assert np.max(np.abs(out[ok] - want[ok]) / want[ok]) < 5e-7
    assert np.all(np.isfinite(out)) and np.all(out >= 0) and np.all(out[~ok] < 1e-37)


def test_compiled_scan_equals_the_torch_twin_at_a_training_shape():
    """Batch 16 at the tiny width (whole rows per job): the two float32 paths agree."""
    g = torch.Generator().manual_seed(0)
    L, b, d, n = 300, 16, 32, 16
    u, dt = torch.randn(L, b, d, generator=g), torch.rand(L, b, d, generator=g) * 0.3
    A = -torch.rand(d, n, generator=g) * 4 - 0.2
    B, C = torch.randn(L, b, n, generator=g), torch.randn(L, b, n, generator=g)
    xs = [t.requires_grad_() for t in (u, dt, A, B, C)]
    x2 = [t.detach().clone().requires_grad_() for t in xs]
    y1, y2 = scan_numba.SelectiveScanNumba.apply(*xs), _SelectiveScan.apply(*x2)
    gy = torch.randn_like(y1)
    for a, r in zip(torch.autograd.grad(y1, xs, gy) + (y1,), torch.autograd.grad(y2, x2, gy) + (y2,)):
        assert _rel(a, r.double()) < 1e-5


def test_float64_keeps_the_pure_pytorch_scan():
    x = [t.requires_grad_() for t in _inputs(1, 4, 3, 20, seed=1)]
    y = selective_scan(*x, delta_softplus=True, backend="cpu")
    assert y.dtype == torch.float64
    assert _rel(y, selective_scan_ref(*x, delta_softplus=True)) < 1e-10
