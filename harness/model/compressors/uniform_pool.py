"""Registry entry ``uniform_pool``: average-pool each frame's patch grid down to its share of the budget.

The plain downsampling baseline of the token-reduction literature (no paper or reference code of its
own; VTC-Bench found plain downsampling beats many published reducers on images), and the kind of
fixed spatial pooling that LLaVA-style video LMMs already apply to each frame (e.g. 2 x 2).

Rule, for ``n`` tokens out of T frames x P patches:

- ``n >= T``: every frame gets an equal share k_t of ``n`` (:func:`~.random_prune.even_shares`, through
  ``split_budget``; the shares differ by at most one). A frame's sqrt(P) x sqrt(P) patch grid is
  average-pooled to an a x b grid with a * b = k_t (the factor pair closest to square with both sides
  <= sqrt(P)) by ``adaptive_avg_pool2d``, which is exactly ``avg_pool2d`` with kernel
  (sqrt(P) / a, sqrt(P) / b) when the sides divide. When k_t has no such factor pair, or P is not a
  square, the frame's P tokens are average-pooled along the token (raster) axis into k_t nearly equal
  runs (``adaptive_avg_pool1d``).
- ``n < T`` (fewer tokens than frames): the frames are pooled in time, each of ``n`` runs of consecutive
  frames averaged (over all their patches) into one token whose frame is the run's first frame.

Shapes: feats (B, T, P, D) -> tokens (B, n, D), frame_index (B, n); frame by frame, each frame's pooled
tokens in raster order. Exactly ``n`` tokens for any 1 <= n <= T * P. No saliency is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig, even_shares
from harness.model.registry import register_compressor


def grid_shape(k: int, side: int) -> tuple[int, int] | None:
    """The factor pair (a, b) of ``k``, a <= b <= side, closest to square; None when there is none."""
    for a in range(math.isqrt(k), 0, -1):
        if k % a == 0:
            return (a, k // a) if k // a <= side else None
    return None  # pragma: no cover - k >= 1 always has the pair (1, k)


def pool_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """x (N, P, D) frames -> (N, k, D): each frame average-pooled to k tokens (see the module doc)."""
    N, P, D = x.shape
    side = math.isqrt(P)
    ab = grid_shape(k, side) if side * side == P else None
    if ab is None:
        return F.adaptive_avg_pool1d(x.transpose(1, 2), k).transpose(1, 2)
    grid = x.view(N, side, side, D).permute(0, 3, 1, 2)  # (N, D, rows, cols)
    return F.adaptive_avg_pool2d(grid, ab).flatten(2).transpose(1, 2)


@dataclass
class UniformPoolConfig(ReducerConfig):
    """No fields of its own: the budget (``ratio``) sets the pooling."""


@register_compressor("uniform_pool", UniformPoolConfig, training_free=True)
class UniformPool(ReducerCompressor):
    """Uniform pooling: each frame's patch grid average-pooled to an equal share of the budget."""

    uses_saliency = False

    cfg: UniformPoolConfig

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, D = feats.shape
        dev = feats.device
        if n < T:  # pool in time: n runs of consecutive frames, one token each
            tokens = F.adaptive_avg_pool1d(feats.mean(dim=2).transpose(1, 2), n).transpose(1, 2)
            first = torch.div(torch.arange(n, device=dev) * T, n, rounding_mode="floor")
            return Reduced(tokens=tokens, frame_index=first.expand(B, n).clone())
        shares = even_shares(n, T, P)  # (T,) on the CPU
        starts = torch.cumsum(shares, 0) - shares
        out = feats.new_empty(B, n, D)
        for k in shares.unique().tolist():  # at most two distinct shares
            frames = (shares == k).nonzero().flatten()
            pooled = pool_frames(feats[:, frames.to(dev)].reshape(B * len(frames), P, D), k)
            place = (starts[frames][:, None] + torch.arange(k)).flatten().to(dev)
            out[:, place] = pooled.reshape(B, len(frames) * k, D)
        frame_index = torch.repeat_interleave(torch.arange(T), shares).to(dev)
        return Reduced(tokens=out, frame_index=frame_index.expand(B, n).clone())
