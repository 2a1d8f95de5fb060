"""Pooling of each period into its query token.

Every pooling module takes the mixed query tokens ``q`` (B, G, Q, D) and the mixed tokens of their
periods ``x`` (B, G, Q, p, D) with a validity ``mask`` (Q, p) (the last period may be shorter), and
returns the pooled tokens (B, G, Q, D):

    weighted   the paper's learnable weighted average: softmax over {query, its tokens} of a learned
               linear score of each (normalised) token, then the weighted mean of the tokens
    mean       plain average over {query, its tokens}
    max        element-wise max over {query, its tokens}
    query      the query token alone (mixing did all the work)
    attention  the query attends to {query, its tokens} (multi-head, learned q/k/v), added to the query
    gpa        MambaMia v2 Gated Patch Aggregation: weights from the query alone (softmax of a linear map
               of the query over the p positions), and a scalar sigmoid gate mixing the query with the
               pooled neighbours: out = g q + (1 - g) sum_i w_i x_i (``gpa_gate: false``: g = 1/2 fixed,
               the gate ablation)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..schema import check_choice
from .mambamia_config import POOLING_TYPES, CompressorConfig


def _neg(t: torch.Tensor) -> float:
    """The most negative value of ``t``'s dtype: a mask fill that fits bf16/fp16 under autocast too."""
    return torch.finfo(t.dtype).min


def _with_query(q: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend the query to its period: (B, G, Q, 1 + p, D) and mask (Q, 1 + p)."""
    allv = torch.cat([q.unsqueeze(-2), x], dim=-2)
    m = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=-1)
    return allv, m


class WeightedPool(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.score = nn.Linear(d, 1, bias=False)  # a bias would cancel in the softmax

    def forward(self, q, x, mask):
        allv, m = _with_query(q, x, mask)
        s = self.score(self.norm(allv)).squeeze(-1)
        s = s.masked_fill(~m, _neg(s))  # (B, G, Q, 1 + p)
        return (s.softmax(-1).unsqueeze(-1) * allv).sum(-2)


class MeanPool(nn.Module):
    def forward(self, q, x, mask):
        allv, m = _with_query(q, x, mask)
        w = m.to(allv.dtype)
        return (allv * w[..., None]).sum(-2) / w.sum(-1)[..., None]


class MaxPool(nn.Module):
    def forward(self, q, x, mask):
        allv, m = _with_query(q, x, mask)
        return allv.masked_fill(~m[..., None], _neg(allv)).amax(-2)


class QueryPool(nn.Module):
    def forward(self, q, x, mask):
        return q


class AttentionPool(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.h = n_heads
        self.norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, q, x, mask):
        allv, m = _with_query(q, x, mask)
        B, G, Q, P, D = allv.shape
        dh = D // self.h
        qq = self.q(self.norm(q)).view(B * G * Q, 1, self.h, dh).transpose(1, 2)
        k, v = self.kv(self.norm(allv)).view(B * G * Q, P, 2, self.h, dh).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(Q, P, dtype=allv.dtype, device=allv.device)
        bias = bias.masked_fill(~m, _neg(bias))
        bias = bias.expand(B * G, Q, P).reshape(B * G * Q, 1, 1, P)
        y = F.scaled_dot_product_attention(qq, k, v, attn_mask=bias)  # (BGQ, h, 1, dh)
        return q + self.out(y.reshape(B, G, Q, D))


class GatedPatchAggregation(nn.Module):
    def __init__(self, d: int, period: int, gated: bool = True):
        super().__init__()
        self.period = period
        self.weights = nn.Linear(d, period)
        self.gate = nn.Linear(d, 1) if gated else None

    def forward(self, q, x, mask):
        w = self.weights(q)[..., : x.shape[-2]]
        w = w.masked_fill(~mask, _neg(w)).softmax(-1)  # (B, G, Q, p)
        pooled = (w.unsqueeze(-1) * x).sum(-2)
        if self.gate is None:
            return 0.5 * (q + pooled)
        g = torch.sigmoid(self.gate(q))
        return g * q + (1 - g) * pooled


def build_pooling(cfg: CompressorConfig, period: int) -> nn.Module:
    check_choice("pooling", cfg.pooling, POOLING_TYPES)
    d = cfg.d_model
    return {
        "weighted": lambda: WeightedPool(d),
        "mean": MeanPool,
        "max": MaxPool,
        "query": QueryPool,
        "attention": lambda: AttentionPool(d, cfg.n_heads),
        "gpa": lambda: GatedPatchAggregation(d, period, cfg.gpa_gate),
    }[cfg.pooling]()
