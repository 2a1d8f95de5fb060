"""Registry entry ``fastvid``: FastVID's dynamic segmentation, salient-token pruning and density merging.

Paper: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025
(arXiv 2503.11187). Reference code: github.com/LunarShen/FastVID (MIT License), in its LLaVA-OneVision
port (``modeling_qwen2.py``, the "FastVID" block of ``Qwen2Model.forward``). This module is written from
the rules below, not copied.

The rule (defaults: ratio r = 0.10 in the paper, c = 8, tau = 0.9, d = 0.4, p = 4, beta = 0.6, k = 4 (``knn``)):

1. **DySeg.** Each frame's global feature is compared with the next one's (cosine); the video is cut after
   the ``c - 1`` least similar transitions and after any transition below ``tau``.
2. **STPrune budget.** Each frame would keep ``floor(P * r)`` tokens: a fraction ``d`` of them as context
   (anchor) tokens, the rest salient. A segment of L frames puts its ``L`` frames' context tokens on its
   anchor frames, every ``p``-th frame counted back from the segment's last frame (``ceil(L / p)`` frames).
3. **ATS.** The salient tokens of each frame are its top tokens by the encoder's pooling-head attention.
4. **DPC-kNN.** Among each frame's other (non-salient) tokens: distance ``||x_i - x_j|| / sqrt(D)``,
   density ``rho = exp(-mean of the squared distances to the k nearest, the token itself counted)``,
   ``delta`` = distance to the nearest denser token (the largest distance for the densest one); the anchor
   tokens of an anchor frame are its top tokens by ``rho * delta``.
5. **DTM.** Every non-salient token of a segment is assigned, for each anchor frame of that segment, to
   its most similar (cosine) anchor of that frame; an anchor becomes
   ``w * anchor + (1 - w) * mean(assigned)`` with ``w = max(1 / (count + 1), beta)``.

Output: salient tokens and merged anchors at their own (frame, patch) places, in time order.
Shapes: feats (B, T, P, D), saliency (B, T, P) -> tokens (B, n, D), frame_index (B, n);
``aux["boundaries"]``: per video, the frames at which a new segment starts (0 left out).

Where this departs from the reference:

- **Saliency.** The ATS scores are ``saliency``: SigLIP's pooling-head attention where the encoder gives
  it, else the token L2 norm (the proxy of the VidCom2 ports). The frame's global feature for DySeg (the
  reference: the pooling head's pooled output) is the saliency-weighted mean of the frame's tokens, which
  is the pooling head's attention pooling when the saliency is that attention.
- **Exact budget.** The reference keeps ``floor(P * r)`` per frame and ``floor(ctx * L / ceil(L / p))`` per
  anchor frame, so its total drifts from ``r * T * P``. Here the video's ``n`` tokens are first spread over
  the frames (shares differing by at most one); each frame's share ``q`` gives ``floor(q * d)`` context
  tokens and ``q - floor(q * d)`` salient ones; a segment's context tokens are spread evenly over its
  anchor frames (at most ``P`` minus that frame's salient tokens each), and what they cannot hold goes back
  to the segment's frames as salient tokens. So every video gets exactly ``n``.
- **Determinism.** The reference breaks density ties with random noise; here the lower token index counts
  as denser, and every top-k is a stable sort (ties to the lower index). The densest token's ``delta`` is
  the largest ``delta`` of its frame (the reference: the frame's largest distance); both rank it first.
- Cost: the pairwise distances are per anchor frame, among its non-salient tokens (anchor frames, P, P);
  the merge compares each segment's tokens with its own anchors, (segments, L * P, anchor frames x
  anchors): never (T * P)^2 over the video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig
from harness.model.compressors.clustering import (
    dpc_knn,
    even_split,
    rank_desc,
    spread,
    take_tokens,
    unit,
)
from harness.model.registry import register_compressor
from harness.schema import ConfigError


@dataclass
class FastVIDConfig(ReducerConfig):
    """FastVID's own fields (the paper's defaults): ``c`` segments at least (the c - 1 least similar
    transitions are cut), ``tau`` cut below this frame-to-frame cosine, ``d`` fraction of the budget given to
    density-merged context tokens, ``p`` anchor-frame spacing within a segment, ``beta`` the anchor's least
    weight in a merge, ``knn`` neighbours in the DPC-kNN density (the token itself counted)."""

    c: int = 8
    tau: float = 0.9
    d: float = 0.4
    p: int = 4
    beta: float = 0.6
    knn: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.c < 1:
            raise ConfigError("c", f"must be >= 1 (the least number of segments), got {self.c}")
        if not -1 <= self.tau <= 1:
            raise ConfigError("tau", f"must be a cosine in [-1, 1], got {self.tau}")
        if not 0 <= self.d <= 1:
            raise ConfigError("d", f"must be in [0, 1] (the context fraction of the budget), got {self.d}")
        if self.p < 1:
            raise ConfigError("p", f"must be >= 1 (anchor frames every p-th frame), got {self.p}")
        if not 0 <= self.beta <= 1:
            raise ConfigError("beta", f"must be in [0, 1] (the anchor's least merge weight), got {self.beta}")
        if self.knn < 1:
            raise ConfigError("knn", f"must be >= 1 (DPC-kNN neighbours), got {self.knn}")


@register_compressor("fastvid", FastVIDConfig, training_free=True)
class FastVID(ReducerCompressor):
    """FastVID (NeurIPS'25): scene segments, salient tokens by encoder attention, density-merged anchors."""

    cfg: FastVIDConfig

    def _cuts(self, x: torch.Tensor, sal: torch.Tensor) -> list[list[bool]]:
        """DySeg: (B, T-1) whether the video is cut after each frame, as Python lists."""
        B, T, P, _ = x.shape
        if T == 1:
            return [[] for _ in range(B)]
        w = sal.clamp_min(0)
        tot = w.sum(-1, keepdim=True)
        w = torch.where(tot > 0, w / tot.clamp_min(1e-30), torch.full_like(w, 1.0 / P))
        g = unit((w[..., None, :] @ x).squeeze(-2))  # (B, T, D): attention-pooled frames
        sim = (g[:, :-1] * g[:, 1:]).sum(-1)  # (B, T-1)
        cuts = sim < self.cfg.tau
        kc = min(self.cfg.c - 1, T - 1)
        if kc > 0:
            cuts.scatter_(1, sim.argsort(dim=1, stable=True)[:, :kc], True)
        return cuts.cpu().tolist()

    def _budgets(self, n: int, T: int, P: int, cuts: list[list[bool]]):
        """Per video: salient and anchor counts per frame (lists of T ints, summing to n), segment id per
        frame and the segment starts."""
        cfg = self.cfg
        q = even_split(n, T)
        ctx = [math.floor(qt * cfg.d + 1e-9) for qt in q]
        S, A, seg, bounds = [], [], [], []
        for cut in cuts:
            starts = [0] + [t + 1 for t, c in enumerate(cut) if c]
            s = [qt - ct for qt, ct in zip(q, ctx)]
            a = [0] * T
            sid = [0] * T
            for i, (lo, hi) in enumerate(zip(starts, starts[1:] + [T])):
                L = hi - lo
                frames = range(lo, hi)
                for t in frames:
                    sid[t] = i
                anchors = [t for j, t in enumerate(frames) if (L - 1 - j) % cfg.p == 0]
                C = sum(ctx[t] for t in frames)
                caps = [P - s[t] for t in anchors]
                got = spread(min(C, sum(caps)), caps)
                for t, g in zip(anchors, got):
                    a[t] = g
                left = C - sum(got)
                if left:  # the anchor frames are full: the rest stays in the segment as salient tokens
                    for t, e in zip(frames, spread(left, [P - s[t] - a[t] for t in frames])):
                        s[t] += e
            S.append(s)
            A.append(a)
            seg.append(sid)
            bounds.append(starts[1:])
        return S, A, seg, bounds

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        B, T, P, D = feats.shape
        dev = feats.device
        x = feats.float()
        sal = saliency.float()
        S, A, seg, bounds = self._budgets(n, T, P, self._cuts(x, sal))
        salient = rank_desc(sal) < torch.tensor(S, dtype=torch.long, device=dev)[..., None]  # (B, T, P): ATS
        kept = salient.reshape(B * T * P)
        merged = None
        if max(max(a) for a in A) > 0:
            where, merged = self._merge(x, salient, A, seg)  # anchors' flat places (B * T * P), values
            kept = kept.clone()
            kept[where] = True
            slot_of = torch.full((B * T * P,), -1, dtype=torch.long, device=dev)
            slot_of[where] = torch.arange(where.numel(), device=dev)
        idx = kept.view(B, T * P).nonzero()[:, 1].view(B, n)  # row-major: time order, exactly n per video
        tokens = take_tokens(x.reshape(B, T * P, D), idx)
        if merged is not None:
            so = slot_of[idx + torch.arange(B, device=dev)[:, None] * (T * P)]
            m = so >= 0
            tokens[m] = merged[so[m]]
        return Reduced(tokens=tokens.to(feats.dtype), frame_index=idx // P, aux={"boundaries": bounds})

    def _merge(self, x, salient, A, seg):
        """DPC-kNN anchors of the anchor frames, then DTM within each segment. Returns the anchors' places
        in the flat (B * T * P) token list and their merged values (N, D)."""
        cfg = self.cfg
        B, T, P, D = x.shape
        dev = x.device
        # the segments that hold anchors: their frames and anchor frames, as rows b * T + t
        segs = []
        for b in range(B):
            lo = 0
            for t in range(1, T + 1):
                if t == T or seg[b][t] != seg[b][lo]:
                    af = [b * T + u for u in range(lo, t) if A[b][u] > 0]
                    if af:
                        segs.append((list(range(b * T + lo, b * T + t)), af, [A[b][r - b * T] for r in af]))
                    lo = t
        lmax = max(len(f) for f, _, _ in segs)
        gmax = max(len(g) for _, g, _ in segs)
        amax = max(max(a) for _, _, a in segs)

        def pad(rows, size, fill):
            return rows + [fill] * (size - len(rows))

        frames = torch.tensor([pad(f, lmax, f[0]) for f, _, _ in segs], device=dev)  # (S, L)
        frame_ok = torch.tensor([pad([True] * len(f), lmax, False) for f, _, _ in segs], device=dev)
        afr = torch.tensor([pad(g, gmax, g[0]) for _, g, _ in segs], device=dev)  # (S, G)
        af_ok = torch.tensor([pad([True] * len(g), gmax, False) for _, g, _ in segs], device=dev)
        a_n = torch.tensor([pad(a, gmax, 0) for _, _, a in segs], device=dev)  # (S, G)

        # anchors: each anchor frame's top non-salient tokens by rho * delta
        rows = afr[af_ok]  # (N,) each anchor frame once, in order
        free = ~salient.reshape(B * T, P)
        xr, fr = x.reshape(B * T, P, D), free
        if rows.numel() < B * T:  # (else every frame is one, in order)
            xr, fr = xr.index_select(0, rows), fr.index_select(0, rows)
        score = dpc_knn(xr, fr, cfg.knn)[0]
        top = torch.zeros(*afr.shape, amax, dtype=torch.long, device=dev)  # (S, G, Amax) patches
        top[af_ok] = score.argsort(dim=-1, descending=True, stable=True)[:, :amax]
        slot_ok = (torch.arange(amax, device=dev) < a_n[..., None]) & af_ok[..., None]  # (S, G, Amax)
        anc_idx = (afr[..., None] * P + top).view(len(segs), gmax * amax)
        xall = x.reshape(B * T * P, D)
        anc = xall.index_select(0, anc_idx.view(-1)).view(len(segs), gmax * amax, D)

        # DTM: every non-salient token of a segment joins, for each of its anchor frames, that frame's most
        # similar anchor; an anchor becomes w * anchor + (1 - w) * mean(joined), w = max(1 / (count + 1), beta)
        if len(segs) * lmax == B * T:  # equal segments, all with anchors: the video itself, no copy
            tok, tok_ok = x.reshape(len(segs), lmax * P, D), free.view(len(segs), lmax, P)
        else:
            tok_idx = (frames[..., None] * P + torch.arange(P, device=dev)).view(len(segs), lmax * P)
            tok = xall.index_select(0, tok_idx.view(-1)).view(len(segs), lmax * P, D)
            tok_ok = frame_ok[..., None] & free.index_select(0, frames.view(-1)).view(len(segs), lmax, P)
        # the most similar (cosine) anchor: a token's own norm does not change which one, so only the
        # anchors are normalised; -1e30: no anchor in that slot
        sim = tok @ unit(anc).transpose(1, 2)  # (S, L * P, G * Amax)
        sim = sim.view(len(segs), lmax * P, gmax, amax) + (slot_ok.float()[:, None] - 1) * 1e30
        col = sim.argmax(-1) + torch.arange(gmax, device=dev) * amax  # (S, L * P, G)
        val = tok_ok.view(len(segs), lmax * P, 1).float() * af_ok[:, None, :].float()
        onehot = torch.zeros(len(segs), lmax * P, gmax * amax, device=dev).scatter_(-1, col, val)
        cnt = onehot.sum(1)[..., None]  # (S, G * Amax, 1)
        mean = (onehot.transpose(1, 2) @ tok) / cnt.clamp_min(1)
        w = (1.0 / (cnt + 1)).clamp_min(cfg.beta)
        merged = w * anc + (1 - w) * mean
        keep = slot_ok.view(len(segs), gmax * amax)
        return anc_idx[keep], merged[keep]
