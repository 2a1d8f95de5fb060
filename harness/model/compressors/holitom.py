"""Registry entry ``holitom``: HoliTom's outer (pre-LLM) stage: static windows averaged over time, then
density merging.

Paper: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", NeurIPS 2025
(arXiv 2505.21334). Reference code: github.com/cokeshao/HoliTom (Apache-2.0), ``holitom/llava_arch.py``
(``select_static_windows``, ``get_static_dynamic_features``, ``merge_tokens_by_attention_density``,
``merge_tokens_by_density``, ``cluster_dpc_knn``). Written from the rules below, not copied. The inner
stage (token merging inside the LLM) is out of scope: it needs the LLM's hidden states.

The rule (defaults: retain 0.10-0.25, T = 0.8 (``static_threshold``), beta = 0.6, K = 7 (``knn``), D = 0):

1. **Static windows.** A patch position is static over a window of frames when the cosine of its tokens in
   every two consecutive frames of the window exceeds T. A dynamic programme over the frames splits the
   video into windows (single frames allowed) that maximise the tokens saved, sum over windows of
   (static positions) x (length - 1).
2. **Temporal merging.** In each window, every static position becomes one token, its tokens' mean over
   the window's frames (placed at the window's first frame); the other positions are dynamic, per frame.
3. **Spatial merging**, at one retain ratio over what is left: the static tokens of a window are
   clustered by DPC-kNN (distance ``||x_i - x_j|| / sqrt(D)``, density over the ``min(K, clusters)``
   nearest, the token itself counted; centres = top ``rho * delta``); each other token joins its nearest
   centre and a centre with members becomes ``beta * centre + (1 - beta) * mean(members)``. Each frame's
   dynamic tokens keep their top ones by encoder attention (a fraction D of them instead as DPC-kNN
   centres of the rest, merged the same way; the reference's default D is 0).

Output: kept and merged tokens at their (frame, patch) places, in time order; a static token carries its
window's first frame. Shapes: feats (B, T, P, D), saliency (B, T, P) -> tokens (B, n, D), frame_index
(B, n); ``aux["segments"]``: per video the windows as [first, last] frames, ``aux["static"]``: per video the
number of static positions (summed over windows).

Where this departs from the reference:

- **Exact budget.** The reference rescales the ratio by the tokens left after step 2 and rounds per group,
  so its total drifts from ``r * T * P``; here the video's ``n`` tokens are split over the groups (each
  window's static tokens, each frame's dynamic tokens) in proportion to their sizes with
  :func:`~harness.model.compressors.base.split_budget` (exact, each within its size). When the static
  averaging alone would leave fewer than ``n`` tokens (a nearly still video at a large budget), the least
  static positions (lowest worst-case cosine over their window) go back to being dynamic until at least
  ``n`` remain.
- **Saliency.** The dynamic tokens' attention is ``saliency`` (SigLIP's pooling-head attention where the
  encoder gives it, else the token L2 norm, the proxy of the VidCom2 ports).
- The reference pools each frame 2x2 (LLaVA-OneVision's projector side) first; this runs on the encoder's
  own grid. Its random tie-break noise in the density is replaced by index order (deterministic), and a
  group's densest token gets the group's largest ``delta`` (the reference: the largest distance; both
  rank it first).
- Cost: the distances are per frame, among the tokens that cluster there (a window's static tokens sit
  in its first frame): (frames, P, P) at most, never (T * P)^2; the window search is an O(T^2) dynamic
  programme over small ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig, split_budget
from harness.model.compressors.clustering import dpc_knn, rank_desc, take_tokens
from harness.model.registry import register_compressor
from harness.schema import ConfigError


def static_windows(counts: list[list[int]], T: int, max_window: int) -> list[tuple[int, int]]:
    """The reference's dynamic programme for one video. ``counts[i][l - 1]``: the number of positions
    static over the ``l + 1`` frames ending at frame ``i + 1`` (transition i); a window of w frames saves
    ``static positions x (w - 1)`` tokens. Returns the windows (first, last) that save the most, covering
    0..T-1 in order; a longer window wins only when it saves strictly more (the reference's tie rule)."""
    dp = [0] * T
    prev = [0] * T
    for i in range(T):
        best, bj = (dp[i - 1] if i else 0), i
        for w in range(2, min(i + 1, max_window) + 1):
            j = i - w
            val = (dp[j] if j >= 0 else 0) + counts[i - 1][w - 2] * (w - 1)
            if val > best:
                best, bj = val, j + 1
        dp[i], prev[i] = best, bj
    out, i = [], T - 1
    while i >= 0:
        out.append((prev[i], i))
        i = prev[i] - 1
    return out[::-1]


@dataclass
class HoliTomConfig(ReducerConfig):
    """HoliTom's own fields (the reference's defaults): ``static_threshold`` (its T) the consecutive-frame
    cosine above which a position is static, ``beta`` the centre's weight in a merge, ``knn`` (its K) the
    DPC-kNN neighbours (at most the cluster count), ``d`` (its D) the fraction of a frame's dynamic budget
    given to density-merged tokens, ``max_window`` the longest static window in frames."""

    static_threshold: float = 0.8
    beta: float = 0.6
    knn: int = 7
    d: float = 0.0
    max_window: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -1 <= self.static_threshold <= 1:
            raise ConfigError("static_threshold", f"must be a cosine in [-1, 1], got {self.static_threshold}")
        if not 0 <= self.beta <= 1:
            raise ConfigError("beta", f"must be in [0, 1] (the centre's merge weight), got {self.beta}")
        if self.knn < 1:
            raise ConfigError("knn", f"must be >= 1 (DPC-kNN neighbours), got {self.knn}")
        if not 0 <= self.d <= 1:
            raise ConfigError("d", f"must be in [0, 1] (the merged fraction of the dynamic budget), got {self.d}")
        if self.max_window < 1:
            raise ConfigError("max_window", f"must be >= 1 frame (1: no static windows), got {self.max_window}")


@register_compressor("holitom", HoliTomConfig, training_free=True)
class HoliTom(ReducerCompressor):
    """HoliTom (NeurIPS'25) outer stage: static windows averaged over time, then DPC-kNN merging."""

    cfg: HoliTomConfig

    def _windows(self, x: torch.Tensor):
        """Static windows of every video: the windows (lists of (first, last)), each frame's window start
        and length (B, T), the runs of static transitions ending at each transition (B, T-1, P) and the
        consecutive-frame cosines (B, T-1, P) (both None when no window can form)."""
        cfg = self.cfg
        B, T, P, _ = x.shape
        dev = x.device
        lm = min(T - 1, cfg.max_window - 1)
        if lm < 1:
            wins = [[(t, t) for t in range(T)] for _ in range(B)]
            first = torch.arange(T, device=dev).expand(B, T)
            return wins, first, torch.ones(B, T, dtype=torch.long, device=dev), None, None
        norm = x.norm(dim=-1).clamp_min_(1e-12)
        sim = (x[:, :-1] * x[:, 1:]).sum(-1) / (norm[:, :-1] * norm[:, 1:])  # (B, T-1, P): cosines
        st = (sim > cfg.static_threshold).long()
        run = torch.empty_like(st)  # consecutive static transitions ending at each one
        run[:, 0] = st[:, 0]
        for t in range(1, T - 1):
            run[:, t] = (run[:, t - 1] + 1) * st[:, t]
        lengths = torch.arange(1, lm + 1, device=dev)
        counts = (run[..., None] >= lengths).sum(2)  # (B, T-1, lm): static positions over l + 1 frames
        wins = [static_windows(c, T, cfg.max_window) for c in counts.cpu().tolist()]
        first = torch.tensor([[s for s, e in w for _ in range(e - s + 1)] for w in wins], device=dev)
        length = torch.tensor([[e - s + 1 for s, e in w for _ in range(e - s + 1)] for w in wins], device=dev)
        return wins, first, length, run, sim

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        cfg = self.cfg
        B, T, P, D = feats.shape
        dev = feats.device
        x = feats.float()
        wins, first, length, run, sim = self._windows(x)
        is_first = first == torch.arange(T, device=dev)  # (B, T)
        if run is None:
            static = torch.zeros(B, T, P, dtype=torch.bool, device=dev)
        else:  # static over the window: the run at its last transition covers its length - 1 transitions
            last_tr = (first + length - 2).clamp(0, T - 2)
            reach = run.gather(1, last_tr[..., None].expand(B, T, P))
            static = is_first[..., None] & (length[..., None] >= 2) & (reach >= (length - 1)[..., None])
            saved = (static.sum(-1) * (length - 1)).sum(-1)  # (B,)
            deficit = n - (T * P - saved)
            if bool((deficit > 0).any()):
                static = self._give_back(static, first, length, sim, deficit)
        covered = static.gather(1, first[..., None].expand(B, T, P)) & ~is_first[..., None]
        dynamic = ~static & ~covered

        caps = torch.cat([static.sum(-1), dynamic.sum(-1)], dim=1).cpu()  # (B, 2T): group sizes
        share = split_budget(n, caps, weights=caps.double()).to(dev)
        ks, kd = share[:, :T], share[:, T:]
        kdom = torch.floor(kd * (1 - cfg.d) + 0.5).long()
        kctx = kd - kdom  # (B, T): DPC-kNN centres among each frame's other dynamic tokens
        dominant = (rank_desc(torch.where(dynamic, saliency.float(), -math.inf)) < kdom[..., None]) & dynamic
        kept = dominant.reshape(B * T * P).clone()
        places, values = [], []
        rows = (is_first & static.any(-1) & (ks > 0)).reshape(-1).nonzero()[:, 0]  # windows with static tokens
        if rows.numel():  # their static tokens: each position's mean over the window's frames
            b = rows // T
            avg = (first[b] == (rows % T)[:, None]).float() / length.reshape(-1)[rows, None]  # (R, T)
            per = torch.bincount(b, minlength=B)  # windows of each video, rows in order
            w = torch.arange(rows.numel(), device=dev) - (per.cumsum(0) - per)[b]
            A = torch.zeros(B, int(per.max()), T, device=dev).index_put_((b, w), avg)  # (B, windows, T)
            xs = (A @ x.reshape(B, T, P * D))[b, w].view(-1, P, D)  # (R, P, D)
            where, merged = self._cluster(xs, static.reshape(B * T, P)[rows], ks.reshape(-1)[rows], rows)
            places.append(where)
            values.append(merged)
        rest = dynamic & ~dominant & (kctx > 0)[..., None]
        rows = rest.reshape(B * T, P).any(-1).nonzero()[:, 0]
        if rows.numel():  # the other dynamic tokens (d > 0): DPC-kNN centres of their frame
            xr = x.reshape(B * T, P, D).index_select(0, rows)
            where, merged = self._cluster(xr, rest.reshape(B * T, P)[rows], kctx.reshape(-1)[rows], rows)
            places.append(where)
            values.append(merged)
        if places:
            where = torch.cat(places)
            kept[where] = True
            slot_of = torch.full((B * T * P,), -1, dtype=torch.long, device=dev)
            slot_of[where] = torch.arange(where.numel(), device=dev)
        idx = kept.reshape(B, T * P).nonzero()[:, 1].view(B, n)  # row-major: time order, exactly n per video
        tokens = take_tokens(x.reshape(B, T * P, D), idx)
        if places:
            so = slot_of[idx + torch.arange(B, device=dev)[:, None] * (T * P)]
            m = so >= 0
            tokens[m] = torch.cat(values)[so[m]]
        aux = {"segments": [[[s, e] for s, e in w] for w in wins],
               "static": [int(v) for v in static.sum((1, 2)).tolist()]}
        return Reduced(tokens=tokens.to(feats.dtype), frame_index=idx // P, aux=aux)

    def _cluster(self, x: torch.Tensor, group: torch.Tensor, count: torch.Tensor, frame: torch.Tensor):
        """DPC-kNN merging within groups: x (R, P, D) tokens, group (R, P) bool, count (R,) centres of each
        row, frame (R,) the row's flat frame b * T + t. Each non-centre token of a group joins its nearest
        centre; a centre with members becomes ``beta * centre + (1 - beta) * mean(members)``. Returns the
        centres' flat places (b * T + t) * P + p and their values."""
        P = x.shape[1]
        k = count.clamp(1, self.cfg.knn)[:, None].expand(-1, P)  # the reference: min(K, clusters)
        score, cols, d2, bound = dpc_knn(x, group, k)
        center = (rank_desc(score) < count[:, None]) & group
        cc, ok = center.gather(1, cols), group.gather(1, cols)  # packed
        near, tgt = torch.add(d2, (~cc)[:, None, :].float(), alpha=4 * bound).min(-1)  # nearest centre
        member = ok & ~cc & (near < bound)
        onehot = torch.zeros_like(d2).scatter_(1, tgt[:, None, :], member[:, None, :].float())  # (R, centre, m)
        cnt = onehot.sum(-1, keepdim=True)
        xc = take_tokens(x.float(), cols)  # (R, W, D)
        beta = self.cfg.beta
        merged = torch.where(cnt > 0, beta * xc + (1 - beta) * (onehot @ xc) / cnt.clamp_min(1), xc)
        return (frame[:, None] * P + cols)[cc], merged[cc]

    @staticmethod
    def _give_back(static, first, length, sim, deficit):
        """Return the least static positions (lowest worst cosine over their window) to the dynamic set
        until the averaging saves no more than ``T * P - n`` tokens: (B, T, P) static mask."""
        B, T, P = static.shape
        dev = static.device
        lmax = int(length.max())
        off = torch.arange(lmax - 1, device=dev)
        tr = first[..., None] + off  # (B, T, lmax - 1): the window's transitions
        inside = off < (length - 1)[..., None]
        win = sim.gather(1, tr.clamp(0, T - 2).reshape(B, -1)[..., None].expand(B, T * (lmax - 1), P))
        win = win.view(B, T, lmax - 1, P).masked_fill_(~inside[..., None], math.inf)
        worst = win.amin(2)  # (B, T, P)
        key = torch.where(static, worst, math.inf).reshape(B, T * P)
        gain = torch.where(static, (length - 1)[..., None], 0).reshape(B, T * P)
        order = key.argsort(dim=1, stable=True)
        g = gain.gather(1, order)
        back = (g.cumsum(1) - g < deficit[:, None]) & (g > 0)
        back = torch.zeros_like(back).scatter_(1, order, back)
        return static & ~back.view(B, T, P)
