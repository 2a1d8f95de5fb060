"""Registry entry ``vidcom2``: VidCom2 (Video Compression Commander), frame-uniqueness-driven pruning.

Paper: X. Liu, Y. Wang, J. Ma, L. Zhang, "Video Compression Commander: Plug-and-Play Inference
Acceleration for Video Large Language Models", EMNLP 2025, arXiv:2505.14454. Reference code:
github.com/xuyang-liu16/VidCom2 (Apache-2.0; ``token_compressor/vidcom2/vidcom2.py``). Written from the
rule, not copied.

Rule, per video of T frames x P patches:

1. Channels: keep the ``channel_ratio`` = 1/2 of the D channels with the lowest variance over the video's
   tokens, and L2-normalise each token on them.
2. Typicality: a token's similarity to a centre is a sum of Gaussian kernels of its squared distance,
   sum_a exp(-d^2 / (2 a)) over the widths ``alphas`` = (1/8, 1/4, 1/2, 1, 2); one score against the
   video's mean token (s_video) and one against its frame's mean token (s_frame).
3. Frame Compression Adjustment: a frame's uniqueness is u_t = -mean_p s_video (a frame far from the
   video gets a high u); p = softmax(u / ``temperature``) with temperature 0.01, and frame t's share of
   the budget is proportional to 1 + p_t - 1/T (the reference's scale base * (1 + p_t - mean p)), so
   frames that differ from the video get more tokens.
4. Adaptive Token Compression: in each frame keep its share of the tokens with the lowest
   s_video + s_frame (the least typical of both the video and the frame).

Matched budget: the reference rounds base * (1 + p_t - mean p) * P per frame (and keeps at least one),
which only approximately sums to the budget. Here the shares are ``split_budget(n, caps = P, weights =
1 + p_t - 1/T)``: largest remainder, exactly ``n`` in all, at most P a frame (what a capped frame cannot
take goes to the others, as the reference's clamp to 1 drops it). With n < T some frames keep nothing.

Shapes: feats (B, T, P, D) -> tokens (B, n, D) in time order, frame_index (B, n). Scores in float32.
No saliency is used (the rule needs none). Ties (identical or all-zero tokens) go to the lower index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.model.compressors.base import (
    Reduced,
    ReducerCompressor,
    ReducerConfig,
    keep_sorted,
    split_budget,
    top_per_frame,
)
from harness.model.registry import register_compressor
from harness.schema import ConfigError


@dataclass
class VidCom2Config(ReducerConfig):
    """``channel_ratio``: fraction of the channels (lowest variance) the scores use (0.5); ``alphas``:
    the Gaussian kernel widths (2^-3 .. 2^1); ``temperature``: of the softmax over frame uniqueness
    (0.01)."""

    channel_ratio: float = 0.5
    alphas: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0, 2.0])
    temperature: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.channel_ratio <= 1:
            raise ConfigError("channel_ratio", f"must be in (0, 1], got {self.channel_ratio}")
        if not self.alphas or any(not a > 0 for a in self.alphas):
            raise ConfigError("alphas", f"must be a non-empty list of positive kernel widths, got {self.alphas}")
        if not self.temperature > 0:
            raise ConfigError("temperature", f"must be > 0, got {self.temperature}")


def gaussian_similarity(x: torch.Tensor, centre: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """Sum of Gaussian kernels of the squared distance of x (..., C) to centre (broadcast): (...)."""
    d2 = (x - centre).pow(2).sum(-1)
    return sum(torch.exp(d2 * (-0.5 / a)) for a in alphas)


@register_compressor("vidcom2", VidCom2Config, training_free=True)
class VidCom2(ReducerCompressor):
    """VidCom2 (EMNLP'25): frame shares by frame uniqueness, then the least typical tokens per frame."""

    uses_saliency = False

    cfg: VidCom2Config

    def frame_scores(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, P, D) -> (frame uniqueness (B, T), token typicality s_video + s_frame (B, T, P))."""
        B, T, P, D = feats.shape
        x = feats.float().reshape(B, T * P, D)
        c = max(1, int(D * self.cfg.channel_ratio))
        var = (x - x.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)  # two passes: torch.var is slow on the CPU
        chans = var.argsort(dim=-1, stable=True)[:, :c]  # the lowest-variance channels
        sel = F.normalize(x.gather(2, chans[:, None, :].expand(B, T * P, c)), dim=-1).view(B, T, P, c)
        s_video = gaussian_similarity(sel, sel.mean(dim=(1, 2), keepdim=True), self.cfg.alphas)
        s_frame = gaussian_similarity(sel, sel.mean(dim=2, keepdim=True), self.cfg.alphas)
        return -s_video.mean(dim=-1), s_video + s_frame

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, _ = feats.shape
        uniq, typical = self.frame_scores(feats)
        prob = torch.softmax((uniq - uniq.amax(dim=-1, keepdim=True)) / self.cfg.temperature, dim=-1)
        weights = (1.0 + prob - 1.0 / T).cpu()
        shares = split_budget(n, torch.full((B, T), P, dtype=torch.long), weights)
        return keep_sorted(feats, top_per_frame(-typical, shares))
