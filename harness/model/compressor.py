"""The MambaMia compressor: frame features (B, T, P, d_in) -> compressed tokens (B, N, d_out).

Read top to bottom:

1. ``in_proj`` maps encoder features to the compressor width d_model.
2. **Spatial stage.** Inside every frame a learnable query token is inserted after each ``spatial.period``
   patches (a last, shorter period gets a query too). All frames' patches and queries form ONE sequence
   (B, T * (P + Qs), D) that ``spatial.n_layers`` mixing blocks process, so queries see the whole video.
   Each query then pools its period -> (B, T, Qs, D). A Transformer block first gets a 1-D sin-cos
   code of each position in that sequence (``pos_embed``): attention alone is blind to order.
3. **Temporal stage** (when ``temporal.period > 1`` or ``temporal.n_layers > 0``). For every spatial slot,
   a query is inserted after each ``temporal.period`` frames; the slot-major sequence (B, Qs * (T + Qt), D)
   is mixed and pooled -> (B, Qt, Qs, D): one token per (time window, spatial slot).
4. **Time-axis aggregator** (v2, ``taa.enabled``): a bidirectional SSM over per-frame anchors whose step
   size delta scores each time step; frames are then kept by cumulative delta, uniformly, or all.
   Its place is ``select_frames`` below; the scores go out in ``aux["delta"]``.
5. **Budget.** If ``budget`` > 0 exactly that many tokens are kept, chosen uniformly over time-major order.
6. ``out_proj`` maps to d_out. Every output token carries the index of the first frame it summarises.

``enabled=False`` is the "vanilla" baseline: no compression, every patch token goes on (after the maps).
The config (:class:`~harness.model.mambamia_config.CompressorConfig`) is next door; the registry entry
``mambamia`` and its presets (the five-way names) are in :mod:`harness.model.compressors.mambamia`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..schema import ConfigError
from .blocks import build_stack
from .compressors.base import CompressorOutput
from .mambamia_config import CompressorConfig, StageConfig, _ceil_div
from .pooling import build_pooling
from .taa import TimeAxisAggregator


def sincos_1d(L: int, D: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 1-D sin-cos position code (L, D) in float32: sin on the first half of the channels, cos on
    the second, frequencies 10000^(-i / (D/2)) (an odd last channel stays zero). float32 keeps the
    paper-scale sequence (~190k positions x 1152) at 0.9 GB; its angle error there is ~0.01 rad."""
    half = D // 2
    freqs = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32, device=device) / max(half, 1)))
    ang = torch.arange(L, dtype=torch.float32, device=device)[:, None] * freqs[None]
    pe = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    return torch.nn.functional.pad(pe, (0, D - 2 * half))


def _interleave_perm(S: int, period: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index maps for a row of S tokens with a query after every ``period`` tokens.

    Returns (perm, tok_pos, q_pos): ``row = cat([tokens, queries])[perm]`` builds the interleaved row of
    length S + Q; ``row[tok_pos]`` / ``row[q_pos]`` read tokens / queries back.
    """
    Q = _ceil_div(S, period)
    i = torch.arange(S)
    g = torch.arange(Q)
    tok_pos = i + i // period
    q_pos = torch.clamp((g + 1) * period, max=S) + g
    perm = torch.empty(S + Q, dtype=torch.long)
    perm[tok_pos] = i
    perm[q_pos] = S + g
    return perm, tok_pos, q_pos


class Stage(nn.Module):
    """Insert queries every ``period`` tokens of each group, mix the whole flattened sequence, pool.

    (B, G, S, D) -> (B, G, ceil(S / period), D). Groups are frames (spatial stage) or spatial slots
    (temporal stage); periods never cross a group boundary, mixing does.
    """

    def __init__(self, cfg: CompressorConfig, stage: StageConfig, name: str):
        super().__init__()
        self.name = name
        self.period = stage.period
        self.query = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        self.query_init = cfg.query_init
        self.mixer = build_stack(cfg, stage.n_layers)
        self.pos_embed = cfg.uses_pos_embed and stage.n_layers > 0
        self.pos_norm = nn.LayerNorm(cfg.d_model) if self.pos_embed and cfg.pos_norm else None
        self._pe: torch.Tensor | None = None  # the last position code, reused while the length fits
        self._perm: tuple[Any, ...] = ()  # (S, device, perm, tok_pos, q_pos) of the last row layout
        self.pool = build_pooling(cfg, stage.period)

    def _positions(self, L: int, D: int, device: torch.device) -> torch.Tensor:
        """The first L rows of a cached sin-cos code (the code of a prefix is the prefix of the code)."""
        pe = self._pe
        if pe is None or pe.shape[0] < L or pe.device != device:
            pe = self._pe = sincos_1d(L, D, device)
        return pe[:L]

    def _layout(self, S: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`_interleave_perm` on ``device``, kept for the next call with the same S: built on the host,
        its three copies to a GPU would each block the host once per forward."""
        if not self._perm or self._perm[:2] != (S, device):
            self._perm = (S, device, *(t.to(device) for t in _interleave_perm(S, self.period)))
        return self._perm[2:]

    def n_queries(self, S: int) -> int:
        return _ceil_div(S, self.period)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, G, S, D = x.shape
        p = self.period
        if p > S:
            raise ConfigError(f"model.compressor.{self.name}.period",
                              f"period {p} is larger than the sequence it divides ({S} tokens per group)")
        Q = self.n_queries(S)
        pad = Q * p - S
        xp = torch.cat([x, x.new_zeros(B, G, pad, D)], dim=2) if pad else x
        mask = (torch.arange(Q * p, device=x.device) < S).view(Q, p)
        q = self.query.expand(B, G, Q, D)
        if self.query_init == "mean":  # BIMBA-style: queries start as the average of their period
            w = mask.to(x.dtype)
            q = q + (xp.view(B, G, Q, p, D) * w[..., None]).sum(-2) / w.sum(-1)[..., None]
        perm, tok_pos, q_pos = self._layout(S, x.device)
        row = torch.cat([x, q], dim=2)[:, :, perm]  # (B, G, S + Q, D)
        row = row.reshape(B, G * (S + Q), D)
        if self.pos_embed:
            if self.pos_norm is not None:  # content at the code's scale (pos_norm)
                row = self.pos_norm(row)
            row = row + self._positions(row.shape[1], D, row.device).to(row.dtype)
        row = self.mixer(row).view(B, G, S + Q, D)
        xm, qm = row[:, :, tok_pos], row[:, :, q_pos]
        if pad:
            xm = torch.cat([xm, xm.new_zeros(B, G, pad, D)], dim=2)
        return self.pool(qm, xm.view(B, G, Q, p, D), mask)


class Compressor(nn.Module):
    """MambaMia (arXiv 2506.13564): queries every period, bidirectional SSM mixing, learned pooling (v2: GPA, TAA)."""

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.d_in, cfg.d_model)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_out)
        self.spatial = Stage(cfg, cfg.spatial, "spatial") if cfg.enabled else None
        has_temporal = cfg.enabled and (cfg.temporal.period > 1 or cfg.temporal.n_layers > 0)
        self.temporal = Stage(cfg, cfg.temporal, "temporal") if has_temporal else None
        self.taa = None
        if cfg.enabled and cfg.taa.enabled:
            self.taa = TimeAxisAggregator(cfg)

    # ------------------------------------------------------------------------------------ counting
    def grid(self, T: int, P: int) -> tuple[int, int]:
        """(time steps, tokens per time step) after the stages, before frame selection and budget."""
        return self.cfg.grid(T, P)

    def count_tokens(self, T: int, P: int) -> int:
        """N for an input of T frames x P patches (frame selection by delta is data dependent: this is
        then the upper bound, which the budget caps)."""
        return self.cfg.count_tokens(T, P)

    # ------------------------------------------------------------------------------------ forward
    def forward(self, feats: torch.Tensor, saliency: torch.Tensor | None = None) -> CompressorOutput:
        """feats: (B, T, P, d_in) -> CompressorOutput(tokens (B, N, d_out), frame_index (B, N)).
        ``saliency`` (encoder attention, for training-free reducers) is not used by MambaMia."""
        if feats.dim() != 4:
            raise ValueError(f"compressor expects frame features (B, T, P, D), got shape {tuple(feats.shape)}")
        B, T, P, _ = feats.shape
        n_out = self.count_tokens(T, P)  # validates periods and budget before any work
        x = self.in_proj(feats)
        aux: dict[str, Any] = {}
        frame_of_step = torch.arange(T, device=feats.device)
        if self.spatial is not None:
            x = self.spatial(x)  # (B, T, Qs, D)
            if self.temporal is not None:
                x = self.temporal(x.transpose(1, 2)).transpose(1, 2)  # (B, Qt, Qs, D)
                frame_of_step = frame_of_step[:: self.cfg.temporal.period]
        steps, per_step = x.shape[1], x.shape[2]
        frame_index = frame_of_step.view(1, steps, 1).expand(B, steps, per_step)
        if self.taa is not None:
            x, frame_index, aux = self.taa(x, frame_index)  # keeps a subset of time steps
        tokens = x.reshape(B, -1, x.shape[-1])
        frame_index = frame_index.reshape(B, -1)
        if self.cfg.budget and tokens.shape[1] > self.cfg.budget:
            keep = torch.linspace(0, tokens.shape[1] - 1, self.cfg.budget, device=feats.device).round().long()
            tokens, frame_index = tokens[:, keep], frame_index[:, keep]
        tokens = self.out_proj(self.out_norm(tokens))
        n = tokens.shape[1]
        assert self.taa is not None or n == n_out, (n, n_out)
        return CompressorOutput(tokens=tokens, frame_index=frame_index, n_tokens=n, aux=aux)

