"""Registry entry ``dycoke``: DyCoke stage 1, temporal token merging (TTM) in windows of frames.

Paper: K. Tao, C. Qin, H. You, Y. Sui, H. Wang, "DyCoke: Dynamic Compression of Tokens for Fast Video
Large Language Models", CVPR 2025, arXiv:2411.15024. Reference code: github.com/KD-TAO/DyCoke
(Apache-2.0; ``llava/model/llava_arch.py``, ``dycole_ttm``; lmms-eval's ``llava_onevision`` carries the
default ``dycoke_k = 0.7``). Written from the rule, not copied. Stage 2 (pruning the KV cache by
attention while decoding) needs the LLM's attention and is out of scope here.

Rule (stage 1): the video is cut into windows of ``window`` = 4 frames. The first frame of each window
is kept whole; each other frame is compared position by position (cosine of the tokens at the same
patch) with an earlier frame of its window, and its most similar tokens, a fraction
``merging_ratio`` = K of them, are dropped (they are represented by the earlier frame's token at that
place). The earlier frame follows the reference's pairing: frame 2 of a window against frame 1, frame 3
against frame 1 (t - 2), frame 4 against frame 3; for other window sizes, offset j is compared with
offset j - lowbit(j) (the same binary-tree pattern).

Matched budget: the published rule keeps P + (W - 1) * (1 - K) * P tokens a window, so K fixes the
count. Here the count is ``n`` (the base's ``ratio``), and K is replaced by the one the budget implies,
as the field's matched-budget ports choose K from the retention ratio:

- ``n >= A`` (A = every window's first frame, ceil(T / W) * P tokens): the first frames are kept whole,
  and the other frames share the remaining ``n - A`` tokens equally (``split_budget``; the reference also
  drops the same number from each of them), each keeping its least similar tokens. The K in effect is
  ``aux['dycoke_k']``; at ``ratio = published_ratio`` (T a multiple of W, (1 - K) * P whole) this is
  the published rule.
- ``n < A`` (below the first frames alone): no other frame keeps a token, and the first frames share
  ``n`` equally. Going one level up the same tree, a window's first frame keeps the tokens least similar
  to the previous window's first frame (t - W); the video's first frame, which has no earlier frame,
  keeps its most salient tokens (the ``saliency`` stand-in for attention: the encoder's, or the token L2
  norm).

Shapes: feats (B, T, P, D) -> tokens (B, n, D) in time order, frame_index (B, n). Exactly ``n`` tokens
for any 1 <= n <= T * P, T = 1 included. Ties (identical frames) go to the lower patch index. ``aux``:
the effective K and the kept / dropped token counts of a video (python numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


@dataclass
class DyCokeConfig(ReducerConfig):
    """``window``: frames per window (4); ``merging_ratio``: the published K (0.7), the fraction of a
    non-first frame's tokens dropped. With a matched budget the budget fixes the K in effect (see the
    module doc); ``published_ratio`` is the ratio at which it equals ``merging_ratio``."""

    window: int = 4
    merging_ratio: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 2:
            raise ConfigError("window", f"must be >= 2 (frames per window), got {self.window}")
        if not 0 <= self.merging_ratio < 1:
            raise ConfigError("merging_ratio", f"must be in [0, 1) (the fraction dropped), got {self.merging_ratio}")

    @property
    def published_ratio(self) -> float:
        """The fraction of tokens the published rule keeps (T a multiple of ``window``, (1 - K) * P whole)."""
        return (1 + (self.window - 1) * (1 - self.merging_ratio)) / self.window


def reference_frames(T: int, window: int) -> torch.Tensor:
    """(T,) long: the frame each frame is compared with; a window's first frame with the previous
    window's first frame (-1 for frame 0)."""
    t = torch.arange(T)
    off = t % window
    return torch.where(off == 0, t - window, t - (off & -off)).clamp_min(-1)


@register_compressor("dycoke", DyCokeConfig, training_free=True)
class DyCoke(ReducerCompressor):
    """DyCoke stage 1 (CVPR'25): temporal token merging, dropping tokens repeated from an earlier frame."""

    cfg: DyCokeConfig

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, _ = feats.shape
        W = self.cfg.window
        ref = reference_frames(T, W)
        first = (torch.arange(T) % W) == 0
        n_first = int(first.sum())
        A = n_first * P
        xn = F.normalize(feats.float(), dim=-1)
        sim = (xn * xn[:, ref.clamp_min(0).to(feats.device)]).sum(-1)  # (B, T, P) cosine to the earlier frame
        priority = -sim
        shares = torch.zeros(T, dtype=torch.long)
        if n >= A:
            shares[first] = P
            if n > A:
                shares[~first] = even_shares(n - A, T - n_first, P)
        else:
            shares[first] = even_shares(n, n_first, P)
            priority[:, 0] = saliency[:, 0].float()
        others = (T - n_first) * P
        aux = {"dycoke_k": 1.0 - (n - A) / others if n >= A and others else None,
               "kept_first_frame_tokens": min(n, A), "dropped_first_frame_tokens": max(0, A - n),
               "dropped_repeated_tokens": others - max(0, n - A)}
        red = keep_sorted(feats, top_per_frame(priority, shares))
        red.aux.update(aux)
        return red
