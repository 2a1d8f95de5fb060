"""What every compressor returns, and the shared part of the training-free token reducers.

A reducer keeps (or merges into) exactly ``n = round(ratio * T * P)`` of a video's T x P encoder tokens
by a published rule, on the frozen features (B, T, P, D) before the projector, and then applies the same
token-wise maps as the uncompressed "vanilla" compressor (``in_proj`` -> ``out_norm`` -> ``out_proj``,
the same parameter names): a vanilla checkpoint's compressor weights load into any reducer, which is how
an evaluation-only child swaps a reducer into an already trained LMM. With the reducer in place from
the start, the same maps train (the field's other variant).

A subclass implements :meth:`ReducerCompressor.reduce` and nothing else::

    (feats (B, T, P, D), n, saliency (B, T, P)) -> Reduced(tokens (B, n, D), frame_index (B, n))

Output tokens are in time order (then patch order; a merged token sits at its anchor), and each carries
its source frame, as MambaMia's tokens do. ``saliency`` stands in for the encoder attention that some
rules want ([CLS] or SigLIP's pooling-head attention over the patches): the encoder's own when it gives
one, else the token L2 norm (the proxy of the VidCom2 ports); ``aux["saliency"]`` says which, and the run
record keeps it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.model.registry import CompressorConfigBase
from harness.schema import ConfigError, check_choice

SALIENCY_SOURCES = ("auto", "l2_norm")


@dataclass
class CompressorOutput:
    tokens: torch.Tensor  # (B, N, d_out)
    frame_index: torch.Tensor  # (B, N) long: first source frame of each token
    n_tokens: int
    aux: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReducerConfig(CompressorConfigBase):
    """A training-free reducer: ``ratio`` of the T x P input tokens reach the LLM (``model.visual_tokens``
    sets it for a matched budget). ``saliency``: ``auto`` uses the encoder's attention over the patches
    when the encoder gives it and the token L2 norm otherwise; ``l2_norm`` always the norm."""

    ratio: float = 0.25
    saliency: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.ratio <= 1:
            raise ConfigError("ratio", f"must be in (0, 1] (the fraction of the input tokens kept), got {self.ratio}")
        check_choice("saliency", self.saliency, SALIENCY_SOURCES)

    @property
    def tokenwise(self) -> bool:
        return True  # the rule has no weights; the maps are vanilla's

    def count_tokens(self, T: int, P: int) -> int:
        return min(T * P, max(1, math.floor(self.ratio * T * P + 0.5)))

    def meet_budget(self, tokens: int, T: int, P: int, by: str) -> ReducerConfig:
        if self.count_tokens(T, P) == tokens:
            return self
        return dataclasses.replace(self, ratio=tokens / (T * P))


@dataclass
class Reduced:
    """What a reduction rule returns: ``tokens`` (B, n, D) in the encoder's space, ``frame_index`` (B, n)."""

    tokens: torch.Tensor
    frame_index: torch.Tensor
    aux: dict[str, Any] = field(default_factory=dict)


class ReducerCompressor(nn.Module):
    """Reduction rule (``reduce``, no parameters) then the vanilla compressor's token-wise maps."""

    uses_saliency = True  # whether the rule reads ``saliency`` (False: the data path need not fetch it)

    def __init__(self, cfg: ReducerConfig):
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.d_in, cfg.d_model)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_out)

    def count_tokens(self, T: int, P: int) -> int:
        return self.cfg.count_tokens(T, P)

    def reduce(self, feats: torch.Tensor, n: int, saliency: torch.Tensor) -> Reduced:
        raise NotImplementedError  # pragma: no cover - each reducer's rule

    def forward(self, feats: torch.Tensor, saliency: torch.Tensor | None = None) -> CompressorOutput:
        """feats (B, T, P, d_in), saliency (B, T, P) or None -> CompressorOutput (B, n, d_out)."""
        if feats.dim() != 4:
            raise ValueError(f"{self.cfg.name}: expects frame features (B, T, P, D), got shape {tuple(feats.shape)}")
        B, T, P, _ = feats.shape
        n = self.count_tokens(T, P)
        if saliency is not None and self.cfg.saliency == "auto":
            sal, source = saliency.to(feats.dtype), "encoder"
        else:
            sal, source = feats.float().norm(dim=-1).to(feats.dtype), "l2_norm"
        with torch.no_grad():
            red = self.reduce(feats.detach(), n, sal)
        if red.tokens.shape != (B, n, feats.shape[-1]) or red.frame_index.shape != (B, n):
            raise RuntimeError(f"{self.cfg.name}: the rule returned {tuple(red.tokens.shape)} tokens and "
                               f"{tuple(red.frame_index.shape)} frame indices, not ({B}, {n}, D) / ({B}, {n})")
        tokens = self.out_proj(self.out_norm(self.in_proj(red.tokens)))
        return CompressorOutput(tokens=tokens, frame_index=red.frame_index.long(), n_tokens=n,
                                aux={"saliency": source, **red.aux})


def tokens_per_video(out: CompressorOutput) -> list[int]:
    """The tokens each video of a batch really passes on: N, or with MambaMia v2's time-axis aggregator the
    Q tokens of each step its rule selected (``aux["n_selected"]``; a batch pads to the largest selection)."""
    B, N = out.tokens.shape[:2]
    n_sel = out.aux.get("n_selected")
    if n_sel is None:
        return [N] * B
    per_step = N // out.aux["kept_steps"].shape[1]
    return [int(k) * per_step for k in n_sel.long().cpu().tolist()]


class TokenMeter:
    """Counts the tokens a compressor module passes per video while it is attached (a forward hook):
    ``summary()`` -> ``{"llm_visual": mean, "llm_visual_min", "llm_visual_max", "n_videos"}``;
    ``saliency`` collects where a reducer's attention scores came from (``aux["saliency"]``)."""

    def __init__(self, module: nn.Module):
        self.counts: list[int] = []
        self.saliency: set[str] = set()
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _m: nn.Module, _i: Any, out: CompressorOutput) -> None:
        self.counts.extend(tokens_per_video(out))
        if "saliency" in out.aux:
            self.saliency.add(str(out.aux["saliency"]))

    def close(self) -> None:
        self._handle.remove()

    def summary(self) -> dict[str, Any]:
        if not self.counts:
            return {}
        return {"llm_visual": round(sum(self.counts) / len(self.counts), 2), "llm_visual_min": min(self.counts),
                "llm_visual_max": max(self.counts), "n_videos": len(self.counts)}


# ----------------------------------------------------------------------------------------------- helpers
def split_budget(n: int, caps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Integer shares of ``n`` tokens over G groups that sum to exactly ``n``, each within its cap.

    caps (B, G) or (G,) long: the most each group can give (its size); weights (B, G) (default equal):
    the shares follow them (largest remainder), and what a capped group cannot take goes to the others.
    Returns (B, G) long (or (G,) for (G,) caps). Needs ``n <= caps.sum()`` per row."""
    squeeze = caps.dim() == 1
    caps = caps.view(1, -1) if squeeze else caps
    dev, G = caps.device, caps.shape[1]
    if weights is None:  # equal shares, the extra tokens spread evenly over the groups (not the first ones)
        g = torch.arange(G + 1, dtype=torch.long, device=dev)
        w = torch.div(g * n + G // 2, G, rounding_mode="floor").diff().double().expand(caps.shape)
    else:
        w = weights.to(dev).view(caps.shape).double()
    w = w.clamp_min(0) + 1e-12
    if (caps.sum(-1) < n).any():
        raise ValueError(f"split_budget: {n} tokens but only {caps.sum(-1).min().item()} available")
    out = torch.zeros_like(caps)
    free = caps > 0
    left = torch.full((caps.shape[0],), n, dtype=torch.long, device=dev)
    for _ in range(caps.shape[1] + 1):  # each round fills at least one group to its cap, or ends
        if not (left > 0).any():
            break
        ww = torch.where(free, w, torch.zeros_like(w))
        share = ww / ww.sum(-1, keepdim=True).clamp_min(1e-30) * left[:, None].double()
        base = share.floor().long()
        rem = left - base.sum(-1)
        order = torch.argsort(share - base.double() + torch.where(free, 0.0, -1e9), dim=-1, descending=True,
                              stable=True)
        extra = torch.zeros_like(base)
        ranks = torch.arange(G, device=dev)[None].expand_as(base)
        extra.scatter_(1, order, (ranks < rem[:, None]).long())
        add = torch.minimum(base + extra, caps - out)
        out = out + add
        left = left - add.sum(-1)
        free = out < caps
    return out[0] if squeeze else out


def gather_tokens(feats: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """feats (B, L, D), index (B, n) long -> (B, n, D) (one index_select: faster than gather on the CPU)."""
    B, L, D = feats.shape
    off = torch.arange(B, device=feats.device)[:, None] * L
    return feats.reshape(B * L, D).index_select(0, (index + off).reshape(-1)).view(*index.shape, D)


def in_time_order(flat_index: torch.Tensor, tokens: torch.Tensor, P: int) -> Reduced:
    """Sort kept tokens by their (frame, patch) place; ``flat_index`` (B, n) is frame * P + patch."""
    order = flat_index.argsort(dim=1)
    idx = flat_index.gather(1, order)
    return Reduced(tokens=gather_tokens(tokens, order), frame_index=idx // P)


def keep_flat(feats: torch.Tensor, flat_index: torch.Tensor) -> Reduced:
    """Keep the tokens at ``flat_index`` (B, n) of feats (B, T, P, D), in time order."""
    return keep_sorted(feats, flat_index.sort(dim=1).values)


def even_shares(n: int, groups: int, cap: int) -> torch.Tensor:
    """Equal integer shares of ``n`` tokens over ``groups`` groups of ``cap`` tokens each: (groups,) long
    on the CPU, summing to exactly ``n``; the shares differ by at most one, the extra tokens spread evenly
    (``split_budget`` without weights)."""
    return split_budget(n, torch.full((groups,), cap, dtype=torch.long))


def top_per_frame(priority: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """Flat indices (frame * P + patch) of the ``shares[t]`` highest-priority patches of every frame.

    priority (B, T, P); shares (T,) or (B, T) long, each row summing to the same n. Ties go to the lower
    patch index (stable sort), so the choice is deterministic. Returns (B, n) long, in time order."""
    B, T, P = priority.shape
    dev = priority.device
    shares = shares.to(dev).expand(B, T)
    order = priority.argsort(dim=-1, descending=True, stable=True)  # (B, T, P): patch by rank
    take = torch.arange(P, device=dev) < shares[..., None]  # the first shares[t] ranks
    flat = order + torch.arange(T, device=dev)[:, None] * P
    n = int(shares[0].sum())
    return flat[take].view(B, n).sort(dim=1).values


def keep_sorted(feats: torch.Tensor, flat_index: torch.Tensor) -> Reduced:
    """Keep the tokens at ``flat_index`` (B, n), already in time order, of feats (B, T, P, D): what
    ``keep_flat`` does without its sort and second gather (one ``index_select``, the fastest on the CPU)."""
    B, T, P, D = feats.shape
    n = flat_index.shape[1]
    rows = (flat_index + torch.arange(B, device=feats.device)[:, None] * (T * P)).flatten()
    return Reduced(tokens=feats.reshape(B * T * P, D).index_select(0, rows).view(B, n, D),
                   frame_index=torch.div(flat_index, P, rounding_mode="floor"))


def cosine_matrix(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """(..., n, D), (..., m, D) -> (..., n, m) cosine similarities (float32)."""
    xn = F.normalize(x.float(), dim=-1)
    yn = xn if y is None else F.normalize(y.float(), dim=-1)
    return xn @ yn.transpose(-1, -2)
