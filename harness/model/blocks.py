"""Mixing blocks of the compressor, one config switch apart. Every block maps (B, L, D) -> (B, L, D).

    bi_ssm       bidirectional Mamba (the paper's block; ``ssm.version`` 1: Mamba-1, 2: Mamba-2 SSD)
    uni_ssm      forward-only Mamba (same switch)
    transformer  pre-norm multi-head self-attention (SDPA, non-causal) + MLP, same width
    conv         depthwise conv over the sequence + pointwise MLP: a cheap local mixer
    identity     no mixing at all: asks whether mixing matters

Every sub-layer is wrapped in a skip connection. ``gated=True`` is the paper's gated skip: the output is a
learned per-channel convex mix of the input and the sub-layer output,
``y = g * f(norm(x)) + (1 - g) * x`` with ``g = sigmoid(W_g norm(x) + b_g)``; ``gated=False`` is the plain
residual ``y = x + f(norm(x))``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schema import check_choice
from .mamba2 import ssm_mixer
from .mambamia_config import BLOCK_TYPES, CompressorConfig


class Skip(nn.Module):
    """Pre-norm sub-layer with a gated or plain skip connection. (B, L, D) -> (B, L, D)."""

    def __init__(self, d_model: int, fn: nn.Module, gated: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fn = fn
        self.gate = nn.Linear(d_model, d_model) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = self.norm(x)
        h = self.fn(xn)
        if self.gate is None:
            return x + h
        g = torch.sigmoid(self.gate(xn))
        return x + g * (h - x)


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention through ``scaled_dot_product_attention`` (flash on GPU)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Sequential):
    def __init__(self, d_model: int, mult: int = 4):
        super().__init__(nn.Linear(d_model, mult * d_model), nn.GELU(), nn.Linear(mult * d_model, d_model))


class DepthwiseConv(nn.Module):
    """Same-padded depthwise conv over the sequence axis. (B, L, D) -> (B, L, D)."""

    def __init__(self, d_model: int, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))


class Block(nn.Sequential):
    """One mixing block: a stack of skip-wrapped sub-layers. (B, L, D) -> (B, L, D)."""


def build_block(cfg: CompressorConfig) -> nn.Module:
    d, g = cfg.d_model, cfg.gated
    check_choice("block", cfg.block, BLOCK_TYPES)
    if cfg.block in ("bi_ssm", "uni_ssm"):  # ssm.version 1: Mamba-1, 2: Mamba-2 (harness/model/mamba2.py)
        return Block(Skip(d, ssm_mixer(d, cfg.ssm, bidirectional=cfg.block == "bi_ssm"), g))
    if cfg.block == "transformer":
        return Block(Skip(d, SelfAttention(d, cfg.n_heads), g), Skip(d, MLP(d), g))
    if cfg.block == "conv":
        return Block(Skip(d, DepthwiseConv(d), g), Skip(d, MLP(d, mult=2), g))
    return nn.Identity()


def build_stack(cfg: CompressorConfig, n_layers: int) -> nn.Module:
    """``n_layers`` blocks of ``cfg.block`` in sequence (identity when 0)."""
    if n_layers == 0 or cfg.block == "identity":
        return nn.Identity()
    return nn.Sequential(*[build_block(cfg) for _ in range(n_layers)])
