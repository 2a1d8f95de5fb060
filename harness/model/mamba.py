"""Mamba-1 mixers: the selective SSM layer, one direction or both.

``Mamba`` follows mamba-ssm's ``mamba_simple.Mamba`` (same parameter names and initialisation), with the
scan behind ``harness.model.ssm.selective_scan`` so that it runs on mamba-ssm's CUDA kernel or on the
pure-PyTorch scan. ``BiMamba`` is the Vision-Mamba style bidirectional mixer the paper uses: one shared
input/output projection, and a forward and a backward branch (own conv, x/dt projections, A and D) whose
outputs are averaged before the output projection.

On a GPU with mamba-ssm and causal-conv1d installed (and the scan backend resolving to ``cuda``),
``Mamba.forward`` takes mamba-ssm's fused path instead (``use_fused_kernels``, on by default): each
direction is one ``mamba_inner_fn`` call (causal-conv1d's conv + SiLU, the x/dt projections, the CUDA
scan, the output projection; the conv output and delta are recomputed in the backward pass rather than
kept). Since the output projection is linear, averaging the two directions' projected outputs equals
projecting their average; the backward direction reads the reversed ``xz`` and its (B, L, D) output is
reversed back. Everywhere else (the CPU above all) the path below runs, unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mambamia_config import SSMConfig
from .ssm import cuda_mamba_inner_fn, resolve_backend, selective_scan


class SSMBranch(nn.Module):
    """Causal depthwise conv + selective scan over one direction. (B, Di, L) -> (B, Di, L)."""

    def __init__(self, d_inner: int, cfg: SSMConfig, dt_rank: int,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.backend = cfg.backend
        self.d_state = cfg.d_state
        self.dt_rank = dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * cfg.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        # dt initialised log-uniformly in [dt_min, dt_max]; bias is softplus^-1(dt)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, cfg.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # S4D-real init
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (B, Di, L) -> (B, Di, L)."""
        L = x.shape[-1]
        x = F.silu(self.conv1d(x)[..., :L])
        dbc = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, Bm, Cm = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.transpose(1, 2))  # (B, Di, L)
        A = -torch.exp(self.A_log.float())
        return selective_scan(
            x, dt, A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(), self.D.float(), z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.backend,
        )

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The softplus step size delta the scan would use: x (B, Di, L) -> (B, Di, L). Used by the v2
        time-axis aggregator as a frame-importance score."""
        L = x.shape[-1]
        x = F.silu(self.conv1d(x)[..., :L])
        dt = self.x_proj(x.transpose(1, 2))[..., : self.dt_rank]
        return F.softplus(self.dt_proj(dt)).transpose(1, 2)


class Mamba(nn.Module):
    """Selective SSM mixer. ``bidirectional=True`` adds a backward branch. (B, L, D) -> (B, L, D).

    ``use_fused_kernels`` (class default True; set it on an instance to compare) lets a GPU forward take
    mamba-ssm's fused ``mamba_inner_fn`` when it is importable; it never changes what a CPU run computes."""

    use_fused_kernels: bool = True

    def __init__(self, d_model: int, cfg: SSMConfig, bidirectional: bool = True):
        super().__init__()
        d_inner = cfg.expand * d_model
        dt_rank = cfg.dt_rank or math.ceil(d_model / 16)
        self.bidirectional = bidirectional
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.fwd = SSMBranch(d_inner, cfg, dt_rank)
        self.bwd = SSMBranch(d_inner, cfg, dt_rank) if bidirectional else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in_proj computed straight into the channel-major layout the scan wants (as mamba_simple does):
        # xs and z come out contiguous along L, so neither the conv nor the CUDA scan copies them
        xz = torch.matmul(self.in_proj.weight, x.transpose(1, 2))  # (B, 2Di, L); in_proj has no bias
        if self.fused_path(xz):
            return self._forward_fused(xz)
        xs, z = xz.chunk(2, dim=1)
        y = self.fwd(xs, z)
        if self.bwd is not None:
            y_b = self.bwd(xs.flip(-1), z.flip(-1)).flip(-1)
            y = (y + y_b) * 0.5
        return self.out_proj(y.transpose(1, 2))

    def fused_path(self, t: torch.Tensor) -> bool:
        """Whether a forward on tensors like ``t`` takes mamba-ssm's fused ``mamba_inner_fn``."""
        return (self.use_fused_kernels and t.is_cuda and resolve_backend(self.fwd.backend, t.device) == "cuda"
                and cuda_mamba_inner_fn() is not None)

    def _forward_fused(self, xz: torch.Tensor) -> torch.Tensor:
        """xz: (B, 2Di, L), contiguous along L -> (B, L, D), through ``mamba_inner_fn`` per direction."""
        fn = cuda_mamba_inner_fn()

        def branch(br: SSMBranch, xz_dir: torch.Tensor) -> torch.Tensor:
            return fn(xz_dir, br.conv1d.weight, br.conv1d.bias, br.x_proj.weight, br.dt_proj.weight,
                      self.out_proj.weight, self.out_proj.bias, -torch.exp(br.A_log.float()), None, None,
                      br.D.float(), br.dt_proj.bias.float(), delta_softplus=True)

        y = branch(self.fwd, xz)
        if self.bwd is not None:
            y = (y + branch(self.bwd, xz.flip(-1)).flip(1)) * 0.5
        return y

    def step_sizes(self, x: torch.Tensor) -> torch.Tensor:
        """Mean delta over channels and directions: (B, L, D) -> (B, L)."""
        xs = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)[0]
        d = self.fwd.delta(xs).mean(1)
        if self.bwd is not None:
            d = 0.5 * (d + self.bwd.delta(xs.flip(-1)).mean(1).flip(-1))
        return d
