"""Projector: compressed visual tokens (B, N, d_in) -> LLM embedding space (B, N, d_llm).

``linear`` is a single linear map; ``mlp2x_gelu`` is LLaVA-1.5's two-layer MLP with a GELU between
(the MambaMia reference code is a LLaVA fork and uses it).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.schema import ConfigError

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
VISUAL_POS_TYPES = ("none", "time_slot")


class VisualPosition(nn.Module):
    """Learned absolute positions of visual tokens, added after the projection: a relative-time bucket
    (``frame_index * n_time // T``, so it transfers across frame counts) and the token's slot inside
    its frame (its rank among the tokens of the same frame). Rotary LLMs carry position only in
    attention scores, not in the values, so without this an LLM cannot easily *report* when or where
    a visual event happened."""

    def __init__(self, d: int, n_time: int = 32, n_slot: int = 64, init_std: float = 0.02):
        super().__init__()
        self.n_time, self.n_slot = n_time, n_slot
        self.time = nn.Embedding(n_time, d)
        self.slot = nn.Embedding(n_slot, d)
        nn.init.normal_(self.time.weight, std=init_std)
        nn.init.normal_(self.slot.weight, std=init_std)

    def forward(self, frame_index: torch.Tensor, n_frames: int) -> torch.Tensor:
        """frame_index (B, N) long, non-decreasing along N -> (B, N, d)."""
        fi = frame_index.long()
        t = (fi * self.n_time // max(1, n_frames)).clamp(0, self.n_time - 1)
        first = torch.searchsorted(fi.contiguous(), fi.contiguous(), right=False)
        slot = (torch.arange(fi.shape[1], device=fi.device).expand_as(fi) - first).clamp(0, self.n_slot - 1)
        return self.time(t) + self.slot(slot)


class Projector(nn.Module):
    """Maps visual tokens into the LLM's input embedding space.

    Args:
        kind: ``linear`` or ``mlp2x_gelu``.
        d_in: width of the compressor's output tokens.
        d_out: the LLM's hidden size.
    """

    def __init__(self, kind: str, d_in: int, d_out: int, visual_pos: str = "none"):
        super().__init__()
        if kind not in PROJECTOR_TYPES:
            raise ConfigError("model.projector", f"unknown projector {kind!r}; allowed: {PROJECTOR_TYPES}")
        if visual_pos not in VISUAL_POS_TYPES:
            raise ConfigError("model.visual_pos", f"unknown {visual_pos!r}; allowed: {VISUAL_POS_TYPES}")
        self.pos = VisualPosition(d_out) if visual_pos == "time_slot" else None
        self.kind, self.d_in, self.d_out = kind, d_in, d_out
        if kind == "linear":
            self.net = nn.Linear(d_in, d_out)
        else:
            self.net = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, x: torch.Tensor, frame_index: torch.Tensor | None = None, n_frames: int = 0
                ) -> torch.Tensor:
        """x: (B, N, d_in) -> (B, N, d_out); with ``visual_pos`` the positions of ``frame_index``
        (B, N) out of ``n_frames`` are added."""
        y = self.net(x)
        if self.pos is not None and frame_index is not None:
            y = y + self.pos(frame_index, n_frames).to(y.dtype)
        return y


def build_projector(kind: str, d_in: int, d_out: int, visual_pos: str = "none") -> Projector:
    """Build a :class:`Projector`; ``kind`` is ``ModelConfig.projector``, ``visual_pos`` its
    ``visual_pos``."""
    return Projector(kind, d_in, d_out, visual_pos)
