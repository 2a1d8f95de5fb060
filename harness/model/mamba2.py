"""Mamba-2 mixers (SSD scan), one direction or both, and the version switch ``ssm_mixer``.

``Mamba2`` follows mamba-ssm's ``Mamba2Simple`` (same parameter names and initialisation; one group of
B/C shared by all heads; no tensor parallelism): one input projection gives ``z``, ``xBC`` and ``dt``;
a causal depthwise conv runs over ``xBC``; the SSD scan (``harness.model.ssm.ssd.ssd_scan``: mamba-ssm's
Triton kernel on a GPU, the pure-PyTorch chunked scan elsewhere) runs per head with a scalar decay
``A`` per head; the output is gated by ``silu(z)``, RMS-normalised and projected back.

``bidirectional=True`` mirrors ``harness.model.mamba.Mamba``: the projections are shared and a forward
and a backward branch (own conv, ``dt_bias``, ``A_log``, ``D``) run over the sequence and its reverse;
their gated outputs are averaged before the norm and the output projection.

On a GPU with mamba-ssm and causal-conv1d installed (the SSD backend resolving to ``cuda``), each branch
is one ``mamba_split_conv1d_scan_combined`` call on the whole projection (causal-conv1d's conv + SiLU, the
SSD scan with D and the z gate; the conv output is recomputed in the backward pass rather than kept):
``use_fused_kernels``, on by default. The norm and the output projection stay outside, since they act on
the average of the two directions. On the CPU the path below runs, unchanged.

``stack_directions`` (off by default; ``benchmarks/gpu_fair_baseline.py`` measures it) runs both directions
in one scan launch instead of two: the reversed sequence's heads are stacked beside the forward heads
(2H heads in two B/C groups, each direction keeping its own conv, ``dt_bias``, ``A_log`` and ``D``), so
every SSD kernel, the sequential state passing included, runs once over twice the heads. Same math,
either path; on the CPU it is the pure-PyTorch scan over the stacked heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schema import ConfigError
from .mamba import Mamba
from .mambamia_config import SSMConfig
from .ssm.ssd import cuda_split_conv1d_scan_fn, resolve_ssd_backend, ssd_scan


class SSDBranch(nn.Module):
    """Conv + SSD scan over one direction. xBC: (B, L, Di + 2N), dt: (B, L, H), z: (B, L, Di) -> (B, L, Di)."""

    def __init__(self, d_inner: int, cfg: SSMConfig, nheads: int, chunk_size: int,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner, self.d_state, self.nheads, self.headdim = d_inner, cfg.d_state, nheads, cfg.headdim
        self.backend, self.chunk_size = cfg.backend, chunk_size
        conv_dim = d_inner + 2 * cfg.d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, cfg.d_conv, groups=conv_dim, padding=cfg.d_conv - 1)
        dt = torch.exp(torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(nheads))

    def forward(self, xBC: torch.Tensor, dt: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, L, _ = xBC.shape
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :L].transpose(1, 2))
        x, Bm, Cm = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        y = ssd_scan(
            x.reshape(b, L, self.nheads, self.headdim), dt, -torch.exp(self.A_log.float()),
            Bm.unsqueeze(2), Cm.unsqueeze(2), self.chunk_size, D=self.D.float(),
            z=z.reshape(b, L, self.nheads, self.headdim), dt_bias=self.dt_bias.float(), dt_softplus=True,
            backend=self.backend,
        )
        return y.reshape(b, L, self.d_inner)

    def fused(self, zxbcdt: torch.Tensor) -> torch.Tensor:
        """The branch on the whole input projection through mamba-ssm's ``mamba_split_conv1d_scan_combined``:
        zxbcdt (B, L, 2Di + 2N + H) laid out (z, xBC, dt) -> (B, L, Di), gated by silu(z)."""
        return cuda_split_conv1d_scan_fn()(
            zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias.float(),
            -torch.exp(self.A_log.float()), self.D.float(), self.chunk_size, headdim=self.headdim, ngroups=1)

    def delta(self, dt: torch.Tensor) -> torch.Tensor:
        """The softplus step size the scan uses: dt (B, L, H) -> (B, L, H)."""
        return F.softplus(dt + self.dt_bias)


class Mamba2(nn.Module):
    """Mamba-2 (SSD) mixer. ``bidirectional=True`` adds a backward branch. (B, L, D) -> (B, L, D).

    ``use_fused_kernels`` (class default True; set it on an instance to compare) lets a GPU forward take
    mamba-ssm's fused conv + scan; it never changes what a CPU run computes."""

    use_fused_kernels: bool = True
    stack_directions: bool = False

    def __init__(self, d_model: int, cfg: SSMConfig, bidirectional: bool = True, chunk_size: int = 64):
        super().__init__()
        d_inner = cfg.expand * d_model
        if d_inner % cfg.headdim:
            raise ConfigError("model.compressor.ssm.headdim", f"expand * d_model = {d_inner} is not "
                              f"divisible by headdim={cfg.headdim} (Mamba-2 heads)")
        self.d_inner, self.d_state = d_inner, cfg.d_state
        self.nheads = d_inner // cfg.headdim
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * cfg.d_state + self.nheads, bias=False)
        self.fwd = SSDBranch(d_inner, cfg, self.nheads, chunk_size)
        self.bwd = SSDBranch(d_inner, cfg, self.nheads, chunk_size) if bidirectional else None
        self.norm = nn.RMSNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, xBC, dt = torch.split(self.in_proj(x), [self.d_inner, self.d_inner + 2 * self.d_state, self.nheads],
                                 dim=-1)
        return z, xBC, dt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stack_directions and self.bwd is not None:
            return self._forward_stacked(x)
        if self.fused_path(x):
            zxbcdt = self.in_proj(x)
            y = self.fwd.fused(zxbcdt)
            if self.bwd is not None:
                y = (y + self.bwd.fused(zxbcdt.flip(1)).flip(1)) * 0.5
            return self.out_proj(self.norm(y.to(x.dtype)))
        z, xBC, dt = self._split(x)
        y = self.fwd(xBC, dt, z)
        if self.bwd is not None:
            y_b = self.bwd(xBC.flip(1), dt.flip(1), z.flip(1)).flip(1)
            y = (y + y_b) * 0.5
        return self.out_proj(self.norm(y.to(x.dtype)))

    def _stack(self, zxbcdt: torch.Tensor) -> torch.Tensor:
        """(B, L, 2Di + 2N + H) -> (B, L, 4Di + 4N + 2H): the projection and its reverse along L, laid out as
        one projection of 2H heads in 2 groups: (z_f, z_b, x_f, x_b, B_f, B_b, C_f, C_b, dt_f, dt_b)."""
        sizes = [self.d_inner, self.d_inner, self.d_state, self.d_state, self.nheads]
        fwd, bwd = torch.split(zxbcdt, sizes, -1), torch.split(zxbcdt.flip(1), sizes, -1)
        return torch.cat([t for pair in zip(fwd, bwd) for t in pair], -1)

    def _stacked_params(self) -> tuple[torch.Tensor, ...]:
        """Both branches' conv weight (2(Di + 2N), 1, K) and bias, dt_bias, A and D (2H,), in the stacked order."""
        f, b = self.fwd, self.bwd
        cut = [self.d_inner, self.d_state, self.d_state]

        def pair(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.cat([t for two in zip(torch.split(a, cut), torch.split(c, cut)) for t in two])

        return (pair(f.conv1d.weight, b.conv1d.weight), pair(f.conv1d.bias, b.conv1d.bias),
                torch.cat([f.dt_bias, b.dt_bias]).float(), -torch.exp(torch.cat([f.A_log, b.A_log]).float()),
                torch.cat([f.D, b.D]).float())

    def _forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """Both directions in one conv and one SSD scan over 2H heads. (B, L, D) -> (B, L, D)."""
        b, L, _ = x.shape
        di, n, h, hd = self.d_inner, self.d_state, self.nheads, self.fwd.headdim
        zx = self._stack(self.in_proj(x))
        w, bias, dt_bias, A, D = self._stacked_params()
        if self.fused_path(x):
            y = cuda_split_conv1d_scan_fn()(zx, w.squeeze(1), bias, dt_bias, A, D, self.fwd.chunk_size,
                                            headdim=hd, ngroups=2)
        else:
            z, xBC, dt = torch.split(zx, [2 * di, 2 * (di + 2 * n), 2 * h], dim=-1)
            k = w.shape[-1]
            xBC = F.silu(F.conv1d(xBC.transpose(1, 2), w, bias, padding=k - 1, groups=w.shape[0])[..., :L]
                         .transpose(1, 2))
            xs, Bm, Cm = torch.split(xBC, [2 * di, 2 * n, 2 * n], dim=-1)
            y = ssd_scan(xs.reshape(b, L, 2 * h, hd), dt, A, Bm.reshape(b, L, 2, n), Cm.reshape(b, L, 2, n),
                         self.fwd.chunk_size, D=D, z=z.reshape(b, L, 2 * h, hd), dt_bias=dt_bias,
                         dt_softplus=True, backend=self.fwd.backend).reshape(b, L, 2 * di)
        y = (y[..., :di] + y[..., di:].flip(1)) * 0.5
        return self.out_proj(self.norm(y.to(x.dtype)))

    def fused_path(self, t: torch.Tensor) -> bool:
        """Whether a forward on tensors like ``t`` takes mamba-ssm's fused conv + SSD scan."""
        return (self.use_fused_kernels and t.is_cuda and resolve_ssd_backend(self.fwd.backend, t.device) == "cuda"
                and cuda_split_conv1d_scan_fn() is not None)

    def step_sizes(self, x: torch.Tensor) -> torch.Tensor:
        """Mean delta over heads and directions: (B, L, D) -> (B, L)."""
        dt = self._split(x)[2]
        d = self.fwd.delta(dt).mean(-1)
        if self.bwd is not None:
            d = 0.5 * (d + self.bwd.delta(dt).mean(-1))
        return d


def ssm_mixer(d_model: int, cfg: SSMConfig, bidirectional: bool = True) -> nn.Module:
    """The SSM mixer of ``cfg.version``: 1 -> Mamba-1 (:class:`Mamba`), 2 -> Mamba-2 (:class:`Mamba2`).
    Both map (B, L, D) -> (B, L, D) and have ``step_sizes(x) -> (B, L)``."""
    if cfg.version == 2:
        return Mamba2(d_model, cfg, bidirectional=bidirectional)
    return Mamba(d_model, cfg, bidirectional=bidirectional)
