"""Mamba-2's SSD scan, stated once and slowly: a Python loop over time steps.

Per batch b, head h (head dim p, state n; heads share B and C within a group)::

    dt_t = softplus(dt_t + dt_bias[h])                    (if dt_softplus)
    H_t  = exp(dt_t * A[h]) * H_{t-1} + dt_t * x_t[:, None] * B_t[None, :]     H: (p, n)
    y_t  = H_t @ C_t + D[h] * x_t
    y_t  = y_t * silu(z_t)                                 (if z is given)

A is one scalar per head (Mamba-2's scalar-times-identity state matrix). This is the obviously-correct
reference the chunked scan (``ssd.py``) is tested against. Never use it in a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(B: torch.Tensor, nheads: int) -> torch.Tensor:
    """(b, l, g, n) -> (b, l, nheads, n): each group's B/C shared by its nheads // g heads."""
    g = B.shape[2]
    if nheads % g:
        raise ValueError(f"SSD: nheads={nheads} is not divisible by ngroups={g}")
    return B.repeat_interleave(nheads // g, dim=2) if g != nheads else B


def ssd_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """x, z: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); D: (h,) or (h, p); dt_bias: (h,).
    Returns y: (b, l, h, p)."""
    dtype = x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (t.to(ct) for t in (x, dt, A, B, C))
    b, L, h, p = x.shape
    B, C = expand_groups(B, h), expand_groups(C, h)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    if dt_softplus:
        dt = F.softplus(dt)
    H = x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(L):
        d = dt[:, t]  # (b, h)
        H = torch.exp(d * A)[..., None, None] * H + (d[..., None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((H * C[:, t, :, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    if D is not None:
        Dc = D.to(ct)
        y = y + x * (Dc[:, None] if Dc.dim() == 1 else Dc)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(dtype)
