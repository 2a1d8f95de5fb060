"""Registry entry ``divprune``: DivPrune, diversity-based visual token pruning.

Paper: S. Ranjbar Alvar, G. Singh, M. Akbari, Y. Zhang, "DivPrune: Diversity-based Visual Token Pruning
for Large Multimodal Models", CVPR 2025, arXiv:2503.02175. Reference code: github.com/vbdi/divprune
(CC BY-NC 4.0; ``LLaVA/llava/model/llava_arch.py``, ``DivPrune``). This module is written from the rule,
not copied from that code.

Rule (a greedy solution of the max-min diversity problem, i.e. farthest-point sampling under the cosine
distance d(i, j) = 1 - cos(x_i, x_j)):

1. the first pick is the token whose nearest neighbour (other than itself) is farthest;
2. each further pick is the unpicked token whose distance to its nearest picked token is largest;
3. stop after ``n`` picks; the picked tokens go on in time order.

Scope: ``scope: video`` (the default) runs it over all T x P tokens of a video at once, as the reference
does (it prunes the whole visual-token span of a sample, which for a video is every frame's tokens).
``scope: frame`` runs it inside each frame on an equal share of the budget (``split_budget``), which is
cheaper (T x P^2 instead of (T x P)^2 similarities).

Shapes: feats (B, T, P, D) -> tokens (B, n, D), frame_index (B, n). Exactly ``n`` distinct tokens for any
1 <= n <= T * P: picked tokens are excluded explicitly, so duplicates (identical frames, all-zero
features) cannot be picked twice; ties go to the lowest index. Where the reference differs:

- it runs on the projector's output (the LLM input embeddings); here it runs on the frozen encoder
  features before the projector (the reducer's place in this harness). No saliency is used.
- the reference keeps the whole (TP x TP) distance matrix. Here it is kept when one video's fits in
  ``MATRIX_BYTES`` (1 GiB on the CPU, 12 GiB on a GPU: the CPU study's videos, and one 64 x 729-token
  video, 8.7 GB, at a time on a GPU); beyond that the nearest-neighbour distances are computed in row
  blocks and each pick's distances on the fly (slower, no matrix), with the same picks up to float
  rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig, even_shares, keep_sorted
from harness.model.registry import register_compressor
from harness.schema import check_choice

# The largest similarity matrix (float32, a chunk of the batch's videos) kept whole, by device type; a
# video whose own matrix is larger takes the row path. 12 GiB holds one 64 x 729-token video on a GPU.
MATRIX_BYTES = {"cpu": 1 << 30, "cuda": 12 << 30}
BLOCK_BYTES = 1 << 28  # the row block of the row path's nearest-neighbour pass
_OFF = 3.0  # above any cosine: marks a token that is picked (or itself, on the diagonal)


def farthest_point_picks(x: torch.Tensor, m: int) -> torch.Tensor:
    """Greedy max-min cosine-distance selection: x (G, L, D) -> (G, m) long, the picks in pick order.

    Works in similarity space: ``near[g, j]`` is the largest cosine of token j to the picked set, and the
    next pick is its argmin (the largest distance to the nearest picked token)."""
    G, L, _ = x.shape
    xn = F.normalize(x.float(), dim=-1)
    per_video = L * L * 4
    limit = MATRIX_BYTES.get(x.device.type, MATRIX_BYTES["cpu"])
    if per_video > limit:
        return _picks_by_rows(xn, m)
    step = max(1, limit // per_video)
    return torch.cat([_picks_by_matrix(xn[s:s + step], m) for s in range(0, G, step)])


def _picks_by_matrix(xn: torch.Tensor, m: int) -> torch.Tensor:
    """The whole (L, L) cosine matrix of each video kept: a pick costs one row read."""
    G, L, _ = xn.shape
    rows = torch.arange(G, device=xn.device)
    picks = torch.empty(G, m, dtype=torch.long, device=xn.device)
    sim = xn @ xn.mT  # (G, L, L)
    diag = sim.diagonal(dim1=1, dim2=2)
    diag.fill_(-_OFF)
    first = sim.amax(dim=2).argmin(dim=1)  # the token whose nearest neighbour is farthest
    diag.fill_(_OFF)  # from now on a token's own row marks it as picked
    flat, base = sim.view(G * L, L), rows * L
    near = flat[base + first]
    picks[:, 0] = first
    for i in range(1, m):
        p = near.argmin(dim=1)
        picks[:, i] = p
        torch.maximum(near, flat.index_select(0, p.add_(base)), out=near)
    return picks


def _picks_by_rows(xn: torch.Tensor, m: int) -> torch.Tensor:
    """No matrix: nearest neighbours by row blocks, then each pick's cosines computed on the fly."""
    G, L, _ = xn.shape
    rows = torch.arange(G, device=xn.device)
    picks = torch.empty(G, m, dtype=torch.long, device=xn.device)
    block = max(1, BLOCK_BYTES // (G * L * 4))
    nn_sim = torch.empty(G, L, device=xn.device)
    for s in range(0, L, block):
        part = xn[:, s:s + block] @ xn.mT  # (G, b, L)
        part.diagonal(offset=s, dim1=1, dim2=2).fill_(-_OFF)
        nn_sim[:, s:s + block] = part.amax(dim=2)
    p = nn_sim.argmin(dim=1)
    del nn_sim
    near = torch.full((G, L), -_OFF, device=xn.device)
    for i in range(m):
        if i:
            p = near.argmin(dim=1)
        picks[:, i] = p
        torch.maximum(near, torch.bmm(xn, xn[rows, p][:, :, None])[..., 0], out=near)
        near.scatter_(1, p[:, None], _OFF)
    return picks


@dataclass
class DivPruneConfig(ReducerConfig):
    """``scope``: ``video`` (the reference: one selection over all of a video's tokens) or ``frame``
    (one selection per frame, on equal shares of the budget)."""

    scope: str = "video"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("scope", self.scope, ("video", "frame"))


@register_compressor("divprune", DivPruneConfig, training_free=True)
class DivPrune(ReducerCompressor):
    """DivPrune (CVPR'25): greedy max-min cosine-distance (farthest-point) token selection."""

    uses_saliency = False

    cfg: DivPruneConfig

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, D = feats.shape
        if self.cfg.scope == "video":
            return keep_sorted(feats, farthest_point_picks(feats.reshape(B, T * P, D), n).sort(dim=1).values)
        shares = even_shares(n, T, P).to(feats.device)  # (T,)
        picks = farthest_point_picks(feats.reshape(B * T, P, D), int(shares.max())).view(B, T, -1)
        # greedy picks are nested: a frame's first shares[t] picks are its shares[t]-token selection
        take = torch.arange(picks.shape[-1], device=feats.device) < shares[:, None]
        flat = picks + torch.arange(T, device=feats.device)[:, None] * P
        return keep_sorted(feats, flat[take.expand(B, T, -1)].view(B, n).sort(dim=1).values)
