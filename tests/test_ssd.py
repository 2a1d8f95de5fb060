"""Mamba-2's chunked SSD scan against the sequential reference (float64, forward and gradients), and the
Mamba-2 mixer behind the ``ssm.version`` switch."""

import pytest
import torch

import harness.model.ssm.ssd as ssd
from harness.model.mamba import Mamba
from harness.model.mamba2 import Mamba2, ssm_mixer
from harness.model.mambamia_config import SSMConfig
from harness.model.ssm.ssd import resolve_ssd_backend, segsum, ssd_ref, ssd_scan, ssd_torch

NAMES = ["x", "dt", "A", "B", "C", "D", "z", "dt_bias"]


def _inputs(b, L, h, p, g, n, seed, D_per_channel=False):
    gen = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()

    A = (-torch.rand(h, generator=gen, dtype=torch.float64) * 3 - 0.1).requires_grad_()
    D = r(h, p) if D_per_channel else r(h)
    return [r(b, L, h, p), r(b, L, h), A, r(b, L, g, n), r(b, L, g, n), D, r(b, L, h, p), r(h)]


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("L,chunk", [(1, 4), (2, 64), (7, 4), (64, 16), (65, 16), (131, 32), (300, 64)])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_ssd_matches_reference(L, chunk, groups):
    args = _inputs(2, L, 4, 3, groups, 5, seed=L + groups, D_per_channel=groups == 2)
    y_ref = ssd_ref(*args, dt_softplus=True)
    y = ssd_torch(*args, dt_softplus=True, chunk_size=chunk)
    assert y.shape == (2, L, 4, 3)
    assert _rel(y, y_ref) < 1e-6
    gy = torch.randn_like(y_ref)
    for name, a, b in zip(NAMES, torch.autograd.grad(y, args, gy), torch.autograd.grad(y_ref, args, gy)):
        assert _rel(a, b) < 1e-6, name


def test_optional_terms_no_softplus_and_float32():
    x, dt, A, B, C, *_ = _inputs(1, 50, 2, 4, 1, 3, seed=9)
    dt = dt.detach().abs().requires_grad_()
    assert _rel(ssd_torch(x, dt, A, B, C, chunk_size=8), ssd_ref(x, dt, A, B, C)) < 1e-6
    args32 = [a.detach().float() for a in _inputs(2, 200, 2, 4, 1, 3, seed=3)]
    y = ssd_torch(*args32, dt_softplus=True)
    assert y.dtype == torch.float32
    assert _rel(y.double(), ssd_ref(*[a.double() for a in args32], dt_softplus=True)) < 1e-4


def test_segsum_is_the_stable_segment_sum():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    s = segsum(a)
    assert s[3, 1].item() == 3.0 + 4.0 and s[2, 2].item() == 0.0 and s[0, 1].item() == float("-inf")


def test_dispatch_and_loop_is_per_chunk_not_per_step(monkeypatch):
    assert resolve_ssd_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        resolve_ssd_backend("cuda", torch.device("cpu"))
    with pytest.raises(ValueError, match="allowed"):
        resolve_ssd_backend("fast", torch.device("cpu"))
    args = [a.detach() for a in _inputs(1, 9, 2, 2, 1, 2, seed=1)]
    assert torch.equal(ssd_scan(*args[:5], backend="ref"), ssd_ref(*args[:5]))
    calls = {"n": 0}
    real = torch.stack

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(ssd.torch, "stack", counting)
    ssd_torch(*[a.float() for a in args[:5]])
    x = torch.randn(1, 4096, 2, 4)
    ssd_torch(x, torch.rand(1, 4096, 2), -torch.rand(2), torch.randn(1, 4096, 1, 3), torch.randn(1, 4096, 1, 3),
              chunk_size=64)
    assert calls["n"] == 2  # one stack of 64 carried states per call, no per-step list


def test_mamba2_mixer_switch_shapes_direction_and_step_sizes():
    torch.manual_seed(0)
    cfg = SSMConfig(version=2, headdim=8, d_state=8)
    assert isinstance(ssm_mixer(32, cfg), Mamba2) and isinstance(ssm_mixer(32, SSMConfig()), Mamba)
    for bidir in (True, False):
        m = ssm_mixer(32, cfg, bidirectional=bidir)
        x = torch.randn(2, 21, 32, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape
        y[0, 0].sum().backward()
        sees_future = x.grad[0, -1].abs().sum().item() > 0
        assert sees_future == bidir
        d = m.step_sizes(x)
        assert d.shape == (2, 21) and bool((d > 0).all())
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(30, SSMConfig(version=2, headdim=16))


def test_stacked_directions_equal_two_launches_and_keep_each_directions_parameters():
    """``stack_directions``: one scan over 2H heads in 2 groups is the two-branch mixer exactly (output and
    every gradient), and each direction still reads its own parameters (swapping them changes the output)."""
    torch.manual_seed(0)
    m = Mamba2(32, SSMConfig(version=2, headdim=8, d_state=16)).double()
    with torch.no_grad():  # make the two branches differ everywhere
        for p in m.bwd.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 150, 32, dtype=torch.float64, requires_grad=True)
    params = [x, *m.parameters()]
    y0 = m(x)
    g0 = torch.autograd.grad(y0.square().sum(), params)
    m.stack_directions = True
    y1 = m(x)
    g1 = torch.autograd.grad(y1.square().sum(), params)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        m.fwd.A_log, m.bwd.A_log = m.bwd.A_log, m.fwd.A_log
    assert (m(x) - y0).abs().max() > 1e-3
