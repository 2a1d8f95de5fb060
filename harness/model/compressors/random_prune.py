"""Registry entry ``random``: keep a seeded random subset of each frame's tokens.

The plain baseline of the token-reduction literature; it has no paper of its own and no reference code.
UniPruneBench (and VTC-Bench, for downsampling) found that random pruning beats many published reducers
on images, which is why it sits in every table here.

Rule: every frame gets an equal share of the budget (``n`` split over the T frames by
:func:`~harness.model.compressors.base.split_budget`, the remainder spread evenly over the video rather
than given to its first frames); in each frame the kept patches are a uniformly random subset of that
size, drawn from a ``torch.Generator`` seeded with the config's ``seed`` (created inside every call, so
the same input and seed give the same tokens, on any device: the draw happens on the CPU).

Shapes: feats (B, T, P, D) -> tokens (B, n, D) in time order, frame_index (B, n). Exactly ``n`` tokens for
any 1 <= n <= T * P; with n < T, n frames spread over the video keep one token each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.model.compressors.base import (
    Reduced,
    ReducerCompressor,
    ReducerConfig,
    even_shares,
    keep_sorted,
    top_per_frame,
)
from harness.model.registry import register_compressor
from harness.schema import ConfigError


# ------------------------------------------------------------------------------------------ the entry
@dataclass
class RandomConfig(ReducerConfig):
    """``seed``: the seed of the random draw (the same seed, the same subset for the same input)."""

    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"must be in [0, 2**63), got {self.seed}")


@register_compressor("random", RandomConfig, training_free=True)
class RandomPrune(ReducerCompressor):
    """Random pruning: a seeded random subset of each frame's patches (equal shares per frame)."""

    uses_saliency = False

    cfg: RandomConfig

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, _ = feats.shape
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        priority = torch.rand(B, T, P, generator=gen).to(feats.device)
        return keep_sorted(feats, top_per_frame(priority, even_shares(n, T, P)))
