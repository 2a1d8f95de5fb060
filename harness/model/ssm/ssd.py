"""Mamba-2's SSD scan: mamba-ssm's Triton kernel on a GPU, a pure-PyTorch chunked scan elsewhere.

``ssd_scan`` has the signature and shapes of mamba-ssm's ``mamba_chunk_scan_combined``: x, z
``(b, l, h, p)``, dt ``(b, l, h)``, A ``(h,)``, B, C ``(b, l, g, n)``, D ``(h,)`` or ``(h, p)``, dt_bias
``(h,)``; it returns y ``(b, l, h, p)``. The math is in ``ssd_reference.py``.

The chunked scan (the "state space duality" form of the Mamba-2 paper, its ``ssd_minimal`` listing)
cuts the sequence into chunks of ``chunk_size`` steps. Because A is a scalar per head, the decay from step
s to step t inside a chunk is ``exp(sum_{s<k<=t} dt_k A)``, so within a chunk the scan is a masked,
decay-weighted attention ``y = (C B^T * L) X`` (matrix multiplies, no loop), every chunk's end state is
one contraction, and only the (b, h, p, n) states are carried across chunks: a short Python loop over
``l / chunk_size`` chunks, never one per time step. Plain autograd gives the backward pass.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .backends import resolve
from .ssd_reference import expand_groups, ssd_ref


@functools.cache
def cuda_ssd_fn():
    """mamba-ssm's Triton ``mamba_chunk_scan_combined``, or None when mamba-ssm is not importable."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or triton / the package failing to load
        return None
    return mamba_chunk_scan_combined


@functools.cache
def cuda_split_conv1d_scan_fn():
    """mamba-ssm's fused ``mamba_split_conv1d_scan_combined`` (split of the input projection, causal-conv1d's
    conv + SiLU, the SSD scan with D and the z gate, in one autograd function that recomputes the conv
    output in the backward pass), or None when mamba-ssm or causal-conv1d's CUDA extension is missing."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import causal_conv1d_fwd_function, mamba_split_conv1d_scan_combined
    except Exception:
        return None
    return mamba_split_conv1d_scan_combined if causal_conv1d_fwd_function is not None else None


def resolve_ssd_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``cuda`` when the tensors are on a GPU and mamba-ssm imports, else ``torch``."""
    return resolve(backend, device, cuda_ssd_fn, "ssd")


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): ``out[i, j] = sum_{j < k <= i} a_k`` for i >= j and -inf above the diagonal,
    computed by a masked cumulative sum (no cancellation between large partial sums)."""
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    s = a[..., None].expand(*a.shape, T).masked_fill(~torch.tril(ones, -1), 0).cumsum(dim=-2)
    return s.masked_fill(~torch.tril(ones), float("-inf"))


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int = 64) -> torch.Tensor:
    """The scan without D, z and dt transforms. x: (b, l, h, p); dt: (b, l, h) (already positive);
    A: (h,); B, C: (b, l, h, n) (groups expanded). Returns y: (b, l, h, p)."""
    b, L, h, p = x.shape
    n = B.shape[-1]
    q = max(1, min(chunk_size, L))
    nc = -(-L // q)
    pad = nc * q - L
    X = x * dt[..., None]
    a = dt * A  # (b, l, h) log-decay per step
    if pad:  # zero steps at the end: no input, no decay, no effect on earlier outputs
        X, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (X, B, C))
        a = F.pad(a, (0, 0, 0, pad))
    X = X.view(b, nc, q, h, p)
    B = B.reshape(b, nc, q, h, n)
    C = C.reshape(b, nc, q, h, n)
    a = a.view(b, nc, q, h).permute(0, 3, 1, 2)  # (b, h, c, q)
    a_cs = a.cumsum(dim=-1)
    # 1. inside each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_cs_t - a_cs_s) X_s
    Lmat = torch.exp(segsum(a))  # (b, h, c, q, q)
    G = torch.einsum("bclhn,bcshn->bhcls", C, B) * Lmat
    y = torch.einsum("bhcls,bcshp->bclhp", G, X)
    # 2. each chunk's end state from a zero start: sum_s exp(a_cs_end - a_cs_s) X_s B_s^T
    decay_to_end = torch.exp(a_cs[..., -1:] - a_cs)  # (b, h, c, q)
    Bw = B * decay_to_end.permute(0, 2, 3, 1)[..., None]
    states = torch.einsum("bclhn,bclhp->bchpn", Bw, X)
    # 3. carry states across chunks (a loop over chunks, not steps)
    chunk_decay = torch.exp(a_cs[..., -1]).permute(0, 2, 1)  # (b, c, h)
    carried = [states.new_zeros(b, h, p, n)]
    for c in range(1, nc):
        carried.append(chunk_decay[:, c - 1, :, None, None] * carried[-1] + states[:, c - 1])
    S = torch.stack(carried, dim=1)  # (b, c, h, p, n): state entering each chunk
    # 4. the carried state's contribution: C_t . S exp(a_cs_t)
    decay_in = torch.exp(a_cs).permute(0, 2, 3, 1)  # (b, c, q, h)
    y = y + torch.einsum("bclhn,bchpn->bclhp", C, S) * decay_in[..., None]
    return y.reshape(b, nc * q, h, p)[:, :L]


def ssd_torch(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Same signature and shapes as :func:`ssd_ref`; computes in float32 (float64 if given float64)."""
    dtype = x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (t.to(ct) for t in (x, dt, A, B, C))
    h = x.shape[2]
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    if dt_softplus:
        dt = F.softplus(dt)
    y = ssd_chunked(x, dt, A, expand_groups(B, h), expand_groups(C, h), chunk_size)
    if D is not None:
        Dc = D.to(ct)
        y = y + x * (Dc[:, None] if Dc.dim() == 1 else Dc)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(dtype)


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """``mamba_chunk_scan_combined``'s call: x, z (b, l, h, p); dt (b, l, h); A (h,); B, C (b, l, g, n);
    D (h,) or (h, p); dt_bias (h,). Returns y (b, l, h, p). ``backend``: auto | torch | cuda | ref."""
    which = resolve_ssd_backend(backend, x.device)
    if which == "cuda":
        fn = cuda_ssd_fn()
        return fn(x.contiguous(), dt.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), chunk_size,
                  D=D, z=None if z is None else z.contiguous(), dt_bias=dt_bias, dt_softplus=dt_softplus)
    if which == "ref":
        return ssd_ref(x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return ssd_torch(x, dt, A, B, C, D, z, dt_bias, dt_softplus, chunk_size)


__all__ = ["ssd_scan", "ssd_torch", "ssd_ref", "ssd_chunked", "segsum", "resolve_ssd_backend", "cuda_ssd_fn",
           "cuda_split_conv1d_scan_fn"]
