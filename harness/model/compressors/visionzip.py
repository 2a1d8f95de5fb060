"""Registry entry ``visionzip``: VisionZip's dominant tokens plus merged contextual tokens, frame by frame.

Paper: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025
(arXiv 2412.04467). Reference code: github.com/dvlab-research/VisionZip (Apache-2.0; PyPI ``visionzip``),
``CLIPVisionTower_VisionZip.forward`` in ``visionzip/clip_encoder.py``. This module is written from the
rule below, not copied.

The rule, per image (here: per frame, as video LMMs apply it), defaults 54 dominant + 10 contextual of 576:

1. **Dominant tokens**: the top tokens by the [CLS]-to-patch attention of the encoder's second-to-last
   layer (summed over heads); kept as they are.
2. **Contextual tokens**: the other tokens, in patch order, give ``c`` targets at a stride
   (``step = max(1, R // c)`` over the R remaining tokens, the first c of ``0, step, 2 step, ...``); every
   other remaining token is assigned to its most similar target (cosine of the head-mean attention keys);
   each target becomes one contextual token.

Budget: the video's ``n`` tokens are spread over its frames (shares differing by at most one); a frame's
share ``q`` gives ``round(q * contextual_frac)`` contextual tokens and the rest dominant ones
(``contextual_frac`` = 10/64, the published split), so every video gets exactly ``n``. Each token sits at
its own (frame, patch) place, a contextual token at its target's.

Shapes: feats (B, T, P, D), saliency (B, T, P) -> tokens (B, n, D), frame_index (B, n).

Where this departs from the reference:

- **Saliency.** SigLIP has no [CLS] token: the dominant scores are ``saliency`` (SigLIP's pooling-head
  attention where the encoder gives it, else the token L2 norm, the proxy of the VidCom2 ports); no [CLS]
  token is kept.
- **Similarity proxy.** The attention keys of the second-to-last layer are not available on frozen final
  features: the target assignment uses the cosine of the features themselves.
- **Average, not sum.** The reference's contextual token is ``target + mean(assigned)``; here it is the
  plain mean of the target and its assigned tokens (the merge rule of this harness: a merged token stays on
  the feature scale).
- Ties (saliency, similarity) go to the lower patch index, so the output is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig
from harness.model.compressors.clustering import even_split, take_tokens, unit
from harness.model.registry import register_compressor
from harness.schema import ConfigError


@dataclass
class VisionZipConfig(ReducerConfig):
    """``contextual_frac``: the fraction of each frame's tokens that are merged contextual tokens (the
    published 10 of 54 + 10); the rest are dominant tokens."""

    contextual_frac: float = 10 / 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.contextual_frac <= 1:
            raise ConfigError("contextual_frac", f"must be in [0, 1], got {self.contextual_frac}")


@register_compressor("visionzip", VisionZipConfig, training_free=True)
class VisionZip(ReducerCompressor):
    """VisionZip (CVPR'25): per frame, dominant tokens by encoder attention plus strided contextual merges."""

    cfg: VisionZipConfig

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, D = feats.shape
        dev = feats.device
        q = even_split(n, T)  # shares of n over the frames, differing by one at most
        ctx = [math.floor(qt * self.cfg.contextual_frac + 0.5) for qt in q]
        dom = [qt - ct for qt, ct in zip(q, ctx)]
        steps = [max(1, (P - d) // c) if c else P + 1 for d, c in zip(dom, ctx)]
        dom_n = torch.tensor(dom, device=dev)[:, None]  # (T, 1)
        ctx_n = torch.tensor(ctx, device=dev)[:, None]
        step_n = torch.tensor(steps, device=dev)[:, None]

        order = saliency.float().argsort(dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(P, device=dev).expand_as(order))
        dominant = rank < dom_n  # (B, T, P)
        rest = ~dominant
        pos = rest.long().cumsum(-1) - 1  # place in the frame's remaining tokens, in patch order
        slot = torch.div(pos, step_n, rounding_mode="floor")
        target = rest & (pos % step_n == 0) & (slot < ctx_n)
        kept = (dominant | target).reshape(B, T * P)
        idx = kept.nonzero()[:, 1].view(B, n)  # row-major: time order, exactly n per video
        x = feats.reshape(B, T * P, D)
        tokens = take_tokens(x, idx)
        cmax = max(ctx)
        if cmax > 0:
            xf = feats.float()
            slot = slot.clamp(0, cmax - 1)
            # each frame's targets, (B, T, Cmax): patch index of slot j (slots >= ctx[t] unused)
            tgt = torch.zeros(B, T, cmax + 1, dtype=torch.long, device=dev)
            tgt.scatter_(-1, torch.where(target, slot, cmax), torch.arange(P, device=dev).expand(B, T, P))
            tgt = (tgt[..., :cmax] + torch.arange(T, device=dev)[:, None] * P).view(B, T * cmax)
            tn = unit(take_tokens(xf.reshape(B, T * P, D), tgt)).view(B, T, cmax, D)
            # (B, T, P, Cmax): cosine to each target of the frame, up to the token's own norm (which does
            # not change the most similar one); -1e30: unused slots
            sim = xf @ tn.transpose(-1, -2)
            sim = sim + (torch.arange(cmax, device=dev) >= ctx_n[..., None]).float() * -1e30
            assign = torch.where(target, slot, sim.argmax(-1))  # a target keeps its own slot
            member = torch.zeros(B, T, P, cmax, device=dev).scatter_(-1, assign[..., None], rest[..., None].float())
            merged = member.transpose(-1, -2) @ xf / member.sum(-2)[..., None].clamp_min(1)  # (B, T, Cmax, D)
            is_t = target.reshape(B, T * P).gather(1, idx)
            row = (idx // P) * cmax + slot.reshape(B, T * P).gather(1, idx)  # (B, n): frame's slot
            sub = take_tokens(merged.view(B, T * cmax, D), row)
            tokens = torch.where(is_t[..., None], sub.to(feats.dtype), tokens)
        return Reduced(tokens=tokens, frame_index=idx // P)
