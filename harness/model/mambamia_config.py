"""The MambaMia family's configs, beside its code (:mod:`harness.model.compressor`, blocks, pooling, the SSM
mixers and the time-axis aggregator): the SSM mixer, one downsampling stage, the v2 time-axis aggregator
and the compressor itself, with its token count and how it meets a token budget. Only dataclasses: the
run-level config (:mod:`harness.config`) builds on this module without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from harness.model.registry import CompressorConfigBase
from harness.schema import ConfigError, check_choice


@dataclass
class SSMConfig:
    """Mamba mixer hyper-parameters (shared by every SSM block)."""

    version: Literal[1, 2] = 1  # 1: Mamba-1 selective scan; 2: Mamba-2 SSD scan
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 means ceil(d_model / 16)
    headdim: int = 16  # Mamba-2 only
    backend: Literal["auto", "torch", "cpu", "cuda"] = "auto"  # cpu: Mamba-1's compiled CPU scan (numba)

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand", "headdim"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class StageConfig:
    """One level of the hierarchical downsampling: a query token every ``period`` tokens, ``n_layers``
    mixing blocks over the sequence, then each period pooled into its query."""

    period: int = 16
    n_layers: int = 1

    def __post_init__(self) -> None:
        if self.period < 1:
            raise ConfigError("period", f"must be >= 1, got {self.period}")
        if self.n_layers < 0:
            raise ConfigError("n_layers", f"must be >= 0, got {self.n_layers}")


BLOCK_TYPES = ("bi_ssm", "uni_ssm", "transformer", "conv", "identity")
POOLING_TYPES = ("weighted", "mean", "max", "query", "attention", "gpa")
QUERY_INITS = ("learned", "mean")
POS_EMBEDS = ("auto", "none", "sincos")
SAMPLING_TYPES = ("uniform", "delta", "none")


@dataclass
class TAAConfig:
    """MambaMia v2 Time-Axis Aggregator: ``n_layers`` SSM blocks over the per-frame anchors whose softplus
    step size delta_t scores frames; ``sampling`` picks the frames that reach the LLM (docs/v2.md).

    ``layout``: ``slot`` scans each anchor slot along time (sequences of length T); ``flat`` scans all
    anchors in one time-major sequence. ``sampling``: ``none`` keeps every frame; ``uniform`` keeps
    ``round(keep_ratio * T)`` evenly spaced frames; ``delta`` keeps frame t when the running sum of delta
    crosses the next multiple of ``threshold`` (``relative: true``: the threshold is set per video to
    sum(delta) / round(keep_ratio * T), i.e. a fixed budget spent where delta is large). ``max_frames``
    (0 = none) caps the kept frames (the highest-delta ones stay). Every sample of a batch keeps the same
    count: the batch maximum, topped up with each sample's highest-delta unselected frames.
    ``score_grad``: kept tokens are multiplied by delta_t / stop_grad(delta_t) (value 1) so that the
    scores get a gradient from the loss."""

    enabled: bool = False
    n_layers: int = 1
    layout: str = "slot"  # slot | flat
    sampling: str = "none"  # none | uniform | delta
    threshold: float = 0.5  # cumulative-delta threshold (delta sampling)
    relative: bool = False  # delta sampling: threshold = sum(delta) / round(keep_ratio * T) per video
    keep_ratio: float = 0.5  # fraction of frames kept by uniform (and relative delta) sampling
    max_frames: int = 0  # 0: no cap
    score_grad: bool = True

    def __post_init__(self) -> None:
        check_choice("sampling", self.sampling, SAMPLING_TYPES)
        check_choice("layout", self.layout, ("slot", "flat"))
        if self.n_layers < 1:
            raise ConfigError("n_layers", f"must be >= 1 (delta_t comes from the TAA's SSM), got {self.n_layers}")
        if not 0 < self.keep_ratio <= 1:
            raise ConfigError("keep_ratio", f"must be in (0, 1], got {self.keep_ratio}")
        if self.threshold <= 0:
            raise ConfigError("threshold", f"must be > 0, got {self.threshold}")
        if self.max_frames < 0:
            raise ConfigError("max_frames", f"must be >= 0 (0 = no cap), got {self.max_frames}")


@dataclass
class CompressorConfig(CompressorConfigBase):
    """The MambaMia compressor (registry entry ``mambamia``): frame features (B, T, P, d_in) -> tokens
    (B, N, d_out). ``name`` is the registry entry or preset it was built from (``mambamia``, ``proposed``
    ...: :mod:`harness.model.compressors.mambamia`); ``d_in`` / ``d_model`` / ``d_out`` come from
    :class:`~harness.model.registry.CompressorConfigBase`.

    ``spatial`` queries every ``spatial.period`` patches inside each frame; ``temporal`` then queries
    every ``temporal.period`` frames at each spatial slot (period 1 with 0 layers: no temporal stage).
    ``budget`` (0 = none) is met exactly by uniform token selection after the stages.
    ``block: none`` style "no compression" is ``enabled: false`` (tokens are only projected).
    ``pos_embed`` adds a 1-D sin-cos code of each position in the flattened sequence before mixing:
    ``auto`` does so for the Transformer block only (attention is blind to order; an SSM scan and a
    convolution are not), ``none`` / ``sincos`` force it off / on for any block. ``pos_norm`` layer-norms
    the sequence before the code is added, so that content and code have comparable scale.
    """

    enabled: bool = True
    block: str = "bi_ssm"
    gated: bool = True
    pooling: str = "weighted"
    gpa_gate: bool = True  # pooling: gpa; false: fixed equal mix of query and pooled neighbours
    query_init: str = "learned"
    pos_embed: str = "auto"  # auto | none | sincos
    # LayerNorm before the code: in_proj's tokens have RMS ~0.1 and the code 0.71, so without it the code
    # swamps the video (at init, between-video variance of the output tokens: 0.1% of the total)
    pos_norm: bool = True
    n_heads: int = 4
    spatial: StageConfig = field(default_factory=lambda: StageConfig(period=16, n_layers=2))
    temporal: StageConfig = field(default_factory=lambda: StageConfig(period=1, n_layers=0))
    budget: int = 0
    ssm: SSMConfig = field(default_factory=SSMConfig)
    taa: TAAConfig = field(default_factory=TAAConfig)

    @property
    def uses_pos_embed(self) -> bool:
        """Whether the mixing stages see sin-cos positions (``pos_embed`` resolved for ``block``)."""
        return self.pos_embed == "sincos" or (self.pos_embed == "auto" and self.block == "transformer")

    def __post_init__(self) -> None:
        check_choice("block", self.block, BLOCK_TYPES)
        check_choice("pooling", self.pooling, POOLING_TYPES)
        check_choice("query_init", self.query_init, QUERY_INITS)
        check_choice("pos_embed", self.pos_embed, POS_EMBEDS)
        for name in ("d_in", "d_model", "d_out", "n_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.budget < 0:
            raise ConfigError("budget", f"must be >= 0 (0 = no budget), got {self.budget}")
        if (self.block == "transformer" or self.pooling == "attention") and self.d_model % self.n_heads:
            raise ConfigError("n_heads", f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    # ---------------------------------------------------------------------------- token counting
    def grid(self, T: int, P: int) -> tuple[int, int]:
        """(time steps, tokens per time step) after the stages, before frame selection and budget."""
        if not self.enabled:
            return T, P
        _check_period("spatial", self.spatial.period, P, "patches per frame")
        qs = _ceil_div(P, self.spatial.period)
        if not self.has_temporal:
            return T, qs
        _check_period("temporal", self.temporal.period, T, "frames")
        return _ceil_div(T, self.temporal.period), qs

    @property
    def tokenwise(self) -> bool:
        return not self.enabled  # vanilla: only the token-wise maps

    @property
    def has_temporal(self) -> bool:
        return self.enabled and (self.temporal.period > 1 or self.temporal.n_layers > 0)

    @property
    def exact_count(self) -> bool:
        """False when the time-axis aggregator picks frames by delta: the count is then an upper bound."""
        return not (self.enabled and self.taa.enabled and self.taa.sampling == "delta")

    def count_tokens(self, T: int, P: int) -> int:
        t, q = self.grid(T, P)
        if self.enabled and self.taa.enabled:
            t = taa_max_steps(self.taa, t)
        n = t * q
        if self.budget:
            if self.budget > n:
                raise ConfigError("model.compressor.budget",
                                  f"budget {self.budget} is above the {n} tokens the stages produce "
                                  f"for T={T} frames x P={P} patches")
            n = self.budget
        return n

    def meet_budget(self, tokens: int, T: int, P: int, by: str) -> CompressorConfig:
        """This config changed to pass exactly ``tokens`` tokens for T x P input. ``by: period``: the
        spatial period whose query count per time step gives it (the temporal stage kept); ``cut``: the
        stages as they are, then a uniform cut to ``tokens`` (``budget``)."""
        if not self.enabled:
            if tokens != T * P:
                raise ConfigError("model.visual_tokens", f"{self.name} does not compress (enabled: false): it "
                                  f"passes all {T * P} tokens of T={T} x P={P}, not {tokens}")
            return self
        if not self.exact_count:
            raise ConfigError("model.visual_tokens", f"{self.name} keeps a data-dependent number of frames "
                              "(taa.sampling: delta): its token count cannot be matched to a budget")
        if by == "cut":
            n = dataclasses.replace(self, budget=0).count_tokens(T, P)
            if tokens > n:
                raise ConfigError("model.visual_tokens", f"{self.name}'s stages produce {n} tokens for T={T} x "
                                  f"P={P}, fewer than the budget {tokens}: lower spatial.period")
            return dataclasses.replace(self, budget=0 if tokens == n else tokens)
        t, _ = self.grid(T, P)
        if self.taa.enabled:
            t = taa_max_steps(self.taa, t)
        if tokens % t:
            raise ConfigError("model.visual_tokens", f"{self.name} keeps {t} time steps for T={T} frames, and "
                              f"{tokens} tokens is not a multiple of {t}: no spatial period meets it "
                              "(model.budget_by: cut takes a uniform cut instead)")
        q = tokens // t
        if not 1 <= q <= P:
            raise ConfigError("model.visual_tokens", f"{tokens} tokens over {t} time steps is {q} per step; "
                              f"a spatial period gives 1..{P} (P={P} patches)")
        period = _ceil_div(P, q)
        if _ceil_div(P, period) != q:
            reach = sorted({_ceil_div(P, p) for p in range(1, P + 1)})
            raise ConfigError("model.visual_tokens", f"no spatial period gives {q} queries per frame of P={P} "
                              f"patches (reachable: {reach}); model.budget_by: cut takes a uniform cut instead")
        if _ceil_div(P, self.spatial.period) == q:  # already meets it: keep the variant's own period
            period = self.spatial.period
        return dataclasses.replace(self, budget=0, spatial=dataclasses.replace(self.spatial, period=period))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_period(stage: str, period: int, n: int, what: str) -> None:
    if period > n:
        raise ConfigError(f"model.compressor.{stage}.period",
                          f"period {period} is larger than the sequence it divides ({n} {what})")


def taa_max_steps(taa: TAAConfig, steps: int) -> int:
    """The most time steps the time-axis aggregator passes on out of ``steps`` (uniform / relative delta
    sampling keep round(keep_ratio * steps); absolute delta sampling may keep all; ``max_frames`` caps)."""
    if taa.sampling == "none":
        return steps
    cap = taa.max_frames if taa.max_frames > 0 else steps
    if taa.sampling == "uniform" or taa.relative:
        return min(max(1, math.floor(taa.keep_ratio * steps + 0.5)), cap)  # round, halves up (taa.budget_count)
    return min(steps, cap)
