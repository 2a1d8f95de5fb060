"""Projector: compressed visual tokens (B, N, d_in) -> LLM embedding space (B, N, d_llm).

``linear`` is a single linear map; ``mlp2x_gelu`` is LLaVA-1.5's two-layer MLP with a GELU between
(the MambaMia reference code is a LLaVA fork and uses it).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.config import ConfigError

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


class Projector(nn.Module):
    """Maps visual tokens into the LLM's input embedding space.

    Args:
        kind: ``linear`` or ``mlp2x_gelu``.
        d_in: width of the compressor's output tokens.
        d_out: the LLM's hidden size.
    """

    def __init__(self, kind: str, d_in: int, d_out: int):
        super().__init__()
        if kind not in PROJECTOR_TYPES:
            raise ConfigError("model.projector", f"unknown projector {kind!r}; allowed: {PROJECTOR_TYPES}")
        self.kind, self.d_in, self.d_out = kind, d_in, d_out
        if kind == "linear":
            self.net = nn.Linear(d_in, d_out)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, d_in) -> (B, N, d_out)."""
        return self.net(x)


def build_projector(kind: str, d_in: int, d_out: int) -> Projector:
    """Build a :class:`Projector`; ``kind`` is ``ModelConfig.projector``."""
    return Projector(kind, d_in, d_out)
