"""The pure-PyTorch selective scan against the sequential reference, in float64."""

import pytest
import torch

import harness.model.ssm.scan_torch as scan_torch
from harness.model.ssm import resolve_backend, selective_scan, selective_scan_ref, selective_scan_torch


def _inputs(b, d, n, L, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()

    A = (-torch.rand(d, n, generator=g, dtype=torch.float64) * 3 - 0.1).requires_grad_()
    return [r(b, d, L), r(b, d, L), A, r(b, n, L), r(b, n, L), r(d), r(b, d, L), r(d)]


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("L", [1, 2, 3, 17, 64, 129, 1031])
@pytest.mark.parametrize("superchunk", [8, 512])
@pytest.mark.parametrize("walk", ["two_level", "sequential"])
def test_chunked_scan_matches_reference(L, superchunk, walk, monkeypatch):
    monkeypatch.setattr(scan_torch, "SUPERCHUNK", superchunk)
    # the step-by-step walk is taken from SEQUENTIAL_MIN_ELEMS elements per step (batch 16 at the tiny width)
    monkeypatch.setattr(scan_torch, "SEQUENTIAL_MIN_ELEMS", 1 if walk == "sequential" else 1 << 40)
    args = _inputs(2, 5, 4, L, seed=L)
    y_ref = selective_scan_ref(*args, delta_softplus=True)
    y = selective_scan_torch(*args, delta_softplus=True)
    assert _rel(y, y_ref) < 1e-6
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, args, gy)
    g = torch.autograd.grad(y, args, gy)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    for name, a, b in zip(names, g, g_ref):
        assert _rel(a, b) < 1e-6, name


def test_cpu_superchunk_stays_in_cache():
    """A CPU superchunk's (S, b, d, n) tensors hold at most CPU_SUPERCHUNK_ELEMS elements (a fixed 512
    steps made the tiny preset's batch-16 step memory-bound), and S stays a power of two in [1, SUPERCHUNK]."""
    for b, d, n in [(1, 128, 16), (16, 128, 16), (64, 512, 16), (1, 2, 2)]:
        S = scan_torch.superchunk_for(torch.empty(10, b, d), n)
        assert 1 <= S <= scan_torch.SUPERCHUNK and S & (S - 1) == 0
        assert S == 1 or S * b * d * n <= scan_torch.CPU_SUPERCHUNK_ELEMS


def test_optional_terms_and_no_softplus():
    u, dt, A, B, C, *_ = _inputs(1, 3, 2, 40, seed=7)
    dt = dt.detach().abs().requires_grad_()  # positive step sizes without softplus
    y_ref = selective_scan_ref(u, dt, A, B, C)
    y = selective_scan_torch(u, dt, A, B, C)
    assert _rel(y, y_ref) < 1e-6


def test_float32_close_and_dtype_preserved():
    args = [a.detach().float() for a in _inputs(2, 4, 3, 300, seed=3)]
    y = selective_scan_torch(*args, delta_softplus=True)
    assert y.dtype == torch.float32
    assert _rel(y.double(), selective_scan_ref(*[a.double() for a in args], delta_softplus=True)) < 1e-4


def test_dispatch_picks_the_compiled_scan_on_cpu_and_refuses_cuda_without_gpu():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        resolve_backend("cuda", torch.device("cpu"))
    with pytest.raises(ValueError, match="allowed"):
        resolve_backend("fast", torch.device("cpu"))
    args = [a.detach() for a in _inputs(1, 2, 2, 9, seed=1)]
    assert torch.equal(selective_scan(*args, backend="ref"), selective_scan_ref(*args))


def test_hot_path_has_no_per_step_python_loop(monkeypatch):
    """The chunked scan walks ~2 sqrt(S) positions per superchunk, not one per step."""
    calls = {"n": 0}
    real = torch.addcmul

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(scan_torch.torch, "addcmul", counting)
    args = [a.detach().float() for a in _inputs(1, 2, 2, 4096, seed=0)]
    selective_scan_torch(*args)
    assert calls["n"] < 4096 // 4
