"""MambaMia v2 Time-Axis Aggregator (TAA): mix per-frame anchors along time, score frames by delta_t, keep some.

Input: the anchors of the spatial (GPA) stage, ``x`` (B, T, Q, D) (T time steps, Q anchors per step) and
their source frames ``frame_index`` (B, T, Q). Steps:

1. **Mixing.** ``taa.n_layers`` SSM blocks (Mamba-1 or Mamba-2 by ``ssm.version``; bidirectional unless
   ``block: uni_ssm``; gated skip as ``gated``) run over the anchors. ``layout: slot`` scans each anchor
   slot along time (B * Q sequences of length T: the time axis proper); ``layout: flat`` scans one
   time-major sequence of T * Q anchors.
2. **Scores.** delta_t is the softplus step size of the last block's SSM, averaged over channels (heads),
   directions and the Q anchors of the step: ``aux["delta"]`` (B, T). A large delta means the state is
   overwritten by this frame: new content.
3. **Selection** (:func:`select_steps`) on the detached delta:
   ``none``     every step;
   ``uniform``  ``k = round(keep_ratio * T)`` steps at the centres of k equal segments;
   ``delta``    cumulative-delta sampling: step t is kept when the running sum ``c_t = delta_1 + ... + delta_t``
                reaches the next multiple of ``threshold`` (``floor(c_t / thr) > floor(c_{t-1} / thr)``, so a
                remainder carries over); ``relative: true`` sets ``thr = c_T / k`` per video, which spends a
                fixed budget of k frames where delta is high.
   ``max_frames`` caps uniform and delta sampling (the highest-delta selected steps stay).
   **Fixed count per batch**: every sample keeps the same K steps so that the batch stays a tensor: K is
   ``max_steps(T)`` for ``uniform`` and relative ``delta`` (constant), and the batch maximum of the rule's
   count (>= 1, capped) for absolute ``delta``; a sample whose rule picked fewer steps is topped up with its
   highest-delta unselected steps. Kept steps stay in time order.
4. **Output.** The *mixed* anchors of the kept steps, so the TAA's SSM parameters learn through the
   mixing; with ``score_grad`` each kept step is also scaled by ``delta_t / stop_grad(delta_t)`` (value 1,
   gradient ``x / delta_t``): a straight-through path from the loss to the scores.

``aux``: ``delta`` (B, T) float, ``kept`` (B, K) source frame of each kept step, ``kept_steps`` (B, K)
step indices, ``n_selected`` (B,) steps the rule picked before the cap and top-up, ``step_frames`` (B, T).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..schema import ConfigError
from .blocks import Skip
from .mamba2 import ssm_mixer
from .mambamia_config import CompressorConfig

#: slack when testing ``c_t / thr`` against an integer: an exact hit of the threshold counts as reached
EPS = 1e-9


def budget_count(steps: int, keep_ratio: float) -> int:
    """round(keep_ratio * steps) (halves up), at least 1."""
    return max(1, math.floor(keep_ratio * steps + 0.5))


def uniform_steps(steps: int, k: int) -> list[int]:
    """The centres of k equal segments of ``range(steps)``: ``floor((2 i + 1) steps / (2 k))``, distinct."""
    return [(2 * i + 1) * steps // (2 * k) for i in range(k)]


def cumulative_delta_mask(delta: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """delta (B, T) >= 0, threshold a float or (B, 1) -> bool (B, T): True where the running sum of delta
    reaches its next multiple of the threshold."""
    c = delta.double().cumsum(-1)
    thr = threshold.double() if isinstance(threshold, torch.Tensor) else float(threshold)
    q = torch.floor(c / thr + EPS)
    prev = torch.cat([torch.zeros_like(q[:, :1]), q[:, :-1]], dim=1)
    return q > prev


def select_steps(delta: torch.Tensor, sampling: str, *, threshold: float = 0.5, relative: bool = False,
                 keep_ratio: float = 0.5, max_frames: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which time steps to keep, the same count for every sample.

    delta: (B, T) non-negative scores. Returns (kept (B, K) long step indices in increasing order,
    n_selected (B,) long: how many steps the rule itself picked, before the cap and the top-up).
    """
    Bn, T = delta.shape
    dev = delta.device
    if sampling == "none":
        return torch.arange(T, device=dev).expand(Bn, T), torch.full((Bn,), T, device=dev, dtype=torch.long)
    cap = max_frames if max_frames > 0 else T
    k_budget = min(budget_count(T, keep_ratio), cap)
    if sampling == "uniform":
        idx = torch.tensor(uniform_steps(T, k_budget), device=dev, dtype=torch.long)
        return idx.expand(Bn, k_budget), torch.full((Bn,), k_budget, device=dev, dtype=torch.long)
    if sampling != "delta":
        raise ConfigError("model.compressor.taa.sampling", f"unknown value {sampling!r}")
    d = delta.detach().double().clamp_min(0)
    if relative:
        total = d.sum(-1, keepdim=True).clamp_min(1e-30)
        mask = cumulative_delta_mask(d, total / budget_count(T, keep_ratio))
        K = k_budget
    else:
        mask = cumulative_delta_mask(d, threshold)
        K = int(mask.sum(-1).max().clamp(1, cap))
    n_sel = mask.sum(-1)
    # rank: selected steps first, then by delta (high first); ties keep the earlier step (stable sort)
    key = mask.double() * (d.max() + 1.0) + d
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :K]
    return order.sort(dim=-1).values, n_sel


class TimeAxisAggregator(nn.Module):
    """(B, T, Q, D) anchors + (B, T, Q) frame indices -> kept (B, K, Q, D), (B, K, Q), aux. See the module doc."""

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        self.cfg = cfg.taa
        bidirectional = cfg.block != "uni_ssm"
        self.layers = nn.ModuleList(
            Skip(cfg.d_model, ssm_mixer(cfg.d_model, cfg.ssm, bidirectional=bidirectional), cfg.gated)
            for _ in range(cfg.taa.n_layers)
        )

    def max_steps(self, steps: int) -> int:
        """K for ``steps`` input steps: exact for none / uniform / relative delta, an upper bound for delta."""
        t = self.cfg
        if t.sampling == "none":
            return steps
        cap = t.max_frames if t.max_frames > 0 else steps
        if t.sampling == "uniform" or t.relative:
            return min(budget_count(steps, t.keep_ratio), cap)
        return min(steps, cap)

    def mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, Q, D) -> (mixed (B, T, Q, D), delta (B, T))."""
        B, T, Q, D = x.shape
        slot = self.cfg.layout == "slot"
        seq = x.transpose(1, 2).reshape(B * Q, T, D) if slot else x.reshape(B, T * Q, D)
        for layer in self.layers[:-1]:
            seq = layer(seq)
        last = self.layers[-1]
        d = last.fn.step_sizes(last.norm(seq))  # (B*Q, T) or (B, T*Q)
        seq = last(seq)
        if slot:
            return seq.view(B, Q, T, D).transpose(1, 2), d.view(B, Q, T).mean(1)
        return seq.view(B, T, Q, D), d.view(B, T, Q).mean(-1)

    def forward(self, x: torch.Tensor, frame_index: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """x (B, T, Q, D), frame_index (B, T, Q) -> (x_kept (B, K, Q, D), frame_index_kept (B, K, Q), aux)."""
        B, T, Q, D = x.shape
        mixed, delta = self.mix(x)
        t = self.cfg
        kept, n_sel = select_steps(delta, t.sampling, threshold=t.threshold, relative=t.relative,
                                   keep_ratio=t.keep_ratio, max_frames=t.max_frames)
        K = kept.shape[1]
        out = mixed.gather(1, kept[:, :, None, None].expand(B, K, Q, D))
        if t.score_grad and t.sampling != "none":
            d = delta.gather(1, kept).to(out.dtype)
            out = out * (d / d.detach().clamp_min(1e-12))[:, :, None, None]
        fi = frame_index.gather(1, kept[:, :, None].expand(B, K, Q))
        aux = {"delta": delta.detach().float(), "kept": fi[:, :, 0], "kept_steps": kept, "n_selected": n_sel,
               "step_frames": frame_index[:, :, 0]}
        return out, fi, aux


@torch.no_grad()
def taa_trace(compressor: nn.Module, feats: torch.Tensor, video: str = "") -> dict[str, Any] | None:
    """What the TAA did on one video, as plain JSON for a run record (``extra.taa_trace``) and the report's
    ``delta_curve`` figure: ``{video, sampling, threshold, step_frames, delta, kept, n_selected}``.

    feats: (T, P, d_in) or (1, T, P, d_in). ``threshold`` is the one applied (relative: sum(delta) / k).
    Returns None for a compressor without a TAA.
    """
    taa = getattr(compressor, "taa", None)
    if taa is None:
        return None
    x = feats if feats.dim() == 4 else feats.unsqueeze(0)
    p = next(compressor.parameters())
    out = compressor(x[:1].to(p.device, p.dtype))
    t = taa.cfg
    delta = out.aux["delta"][0].double()
    thr: float | None = None
    if t.sampling == "delta":
        thr = float(delta.sum() / budget_count(delta.numel(), t.keep_ratio)) if t.relative else t.threshold
    return {"video": video, "sampling": t.sampling, "threshold": thr,
            "step_frames": out.aux["step_frames"][0].tolist(), "delta": [round(float(d), 6) for d in delta],
            "kept": out.aux["kept"][0].tolist(), "n_selected": int(out.aux["n_selected"][0])}
