"""Plain dataclass configs and one strict dict -> dataclass builder.

Every job in the harness (train, eval, sweep) is described by a :class:`RunConfig`, a tree of plain
dataclasses. ``build(RunConfig, d)`` turns a nested dict (from YAML or the command line) into that tree
and rejects, with the full key path, unknown keys (with a "did you mean"), wrong types and values a
``__post_init__`` refuses. ``to_dict`` goes back; ``config_hash`` is stable under key order and defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type, or refused by the model. ``path`` is e.g.
    ``model.compressor.block``; ``source`` the file it came from, when known."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path, self.message, self.source = path, message, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path or '<root>'}: {message}")

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.path, self.message, source)


def check_choice(path: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    """Raise a ConfigError naming ``path`` and the allowed values if ``value`` is not one of them."""
    allowed = list(allowed)
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(path, f"unknown value {value!r}{extra}; allowed: {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------------------------- configs
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
class CompressorConfig:
    """The MambaMia compressor: frame features (B, T, P, d_in) -> tokens (B, N, d_out).

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
    d_in: int = 64
    d_model: int = 64
    d_out: int = 64
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


T = TypeVar("T")


# --------------------------------------------------------------------------------------------- builder
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return build(tp, value, _prefix=path)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            check_choice(path, value, allowed)
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, path)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(path, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # evaluating annotations is most of a build's cost: once per class


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _default_overlay(cls: type, name: str) -> dict[str, Any]:
    """Where field ``cls.name``'s default differs from its class's own defaults (e.g. the compressor's
    ``spatial`` stage has 2 layers, a bare StageConfig 1): the keys a partial mapping must inherit.
    Read-only: shared between builds."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if not dataclasses.is_dataclass(default):
        return {}
    mine, bare = to_dict(default), to_dict(type(default)())
    return {k: v for k, v in mine.items() if bare.get(k) != v}


def build(cls: type[T], data: dict[str, Any] | None, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, strictly. Errors name the dotted key path.

    A partial mapping for a nested dataclass field is laid over that field's *own* default, so
    ``{"spatial": {"period": 8}}`` keeps the compressor's default ``spatial.n_layers``."""
    data = dict(data or {})
    hints = _hints(cls)
    names = list(_field_names(cls))
    for key in data:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{_prefix}.{key}" if _prefix else key,
                              f"unknown key{extra}; known keys: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            p = f"{_prefix}.{f.name}" if _prefix else f.name
            value = data[f.name]
            if isinstance(value, dict) and dataclasses.is_dataclass(hints[f.name]):
                overlay = _default_overlay(cls, f.name)
                if overlay:
                    value = deep_merge(overlay, value)
            kwargs[f.name] = _coerce(hints[f.name], value, p)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{_prefix}.{e.path}" if _prefix else e.path, e.message) from None


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON-able dict (lists stay lists)."""
    if obj is None or isinstance(obj, (str, int, float)):  # most nodes: a fast path (bool is an int)
        return obj
    if dataclasses.is_dataclass(obj):
        return {name: to_dict(getattr(obj, name)) for name in _field_names(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def config_hash(obj: Any, n: int = 12) -> str:
    """Stable short hash of a resolved config: canonical JSON (sorted keys) of the full tree, every field
    included, so key order and spelled-out defaults do not change it and any other value does. This is
    the config alone; the run id adds the code's versions and the data (:mod:`harness.identity`)."""
    return hash_view(to_dict(obj), n)


def hash_view(view: dict[str, Any], n: int = 12) -> str:
    """The hash of a resolved config dict ``to_dict(cfg)``: ``config_hash(cfg)`` without the dataclass
    walk."""
    blob = json.dumps(hashed_view(view), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


#: fields that say where a run reports, not what it computes: config_hash and the run id leave them out,
#: so that changing them keeps a run's id, its finished result and its checkpoint
UNHASHED_FIELDS = ("train.report_to",)


def hashed_view(view: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict without :data:`UNHASHED_FIELDS` (copied along their paths, ``view`` kept)."""
    out = view
    for dotted in UNHASHED_FIELDS:
        *parents, leaf = dotted.split(".")
        chain = [out]
        for k in parents:
            nxt = chain[-1].get(k) if isinstance(chain[-1], dict) else None
            if not isinstance(nxt, dict):
                break
            chain.append(nxt)
        else:
            if leaf in chain[-1]:
                node = {k: v for k, v in chain[-1].items() if k != leaf}
                for parent, k in zip(reversed(chain[:-1]), reversed(parents)):
                    node = {**parent, k: node}
                out = node
    return out


def set_by_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_by_path(d, "train.steps", 200)`` on a nested dict, creating mappings on the way."""
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(dotted, f"{k!r} is a value, not a mapping")
        cur = nxt
    cur[keys[-1]] = value


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins. Inputs are not modified."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------- run-level configs
@dataclass
class EncoderConfig:
    """Frozen vision encoder. ``tiny``: built-in deterministic patch features (offline default; uses
    ``image_size``, ``patch_size``, ``dim``, ``seed``; ``config`` may hold ``pos_scale``);
    ``siglip`` / ``clip``: transformers models loaded from ``name_or_path`` (``config``: extra
    from_pretrained kwargs) or, with ``name_or_path`` empty, built with random weights from ``config``
    (vision-config kwargs); sizes then come from the model config. See harness/data/encoders.py."""

    name: str = "tiny"  # tiny | siglip | clip
    name_or_path: str = ""
    image_size: int = 64
    patch_size: int = 8
    dim: int = 64
    config: dict[str, Any] = field(default_factory=dict)
    feature_layer: int = -2  # siglip / clip: which hidden state (LLaVA: -2)
    seed: int = 0  # tiny projection / random-init weights
    batch_size: int = 64  # frames per encoder forward
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        check_choice("name", self.name, ("tiny", "siglip", "clip"))
        for name in ("image_size", "patch_size", "dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class LLMConfig:
    """The language model. ``preset: tiny`` builds a small transformers config (``arch``, sizes below)
    with random init and a word-level tokenizer built locally from the suite; ``paper`` loads
    ``name_or_path`` (a local directory or hub id) with from_pretrained, or, with ``random_init``, only
    its config (or the 7B shape of ``arch`` when ``name_or_path`` is empty) with random weights."""

    preset: str = "tiny"  # tiny | paper
    name_or_path: str = ""
    tokenizer: str = ""  # paper: tokenizer path (default: name_or_path)
    arch: str = "qwen2"  # qwen2 | llama
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0  # 0: n_heads
    intermediate_size: int = 128
    vocab_size: int = 0  # 0: the tokenizer's size
    max_position_embeddings: int = 8192
    # tiny: std of the random init (transformers' initializer_range). Its default, 0.02, suits widths of
    # ~1-4K; at width 64 attention stays uniform and the answer blind to the video for hundreds of steps
    # (measured: 0.02 -> colour learned after ~150 steps x 16; 0.1 -> after ~40).
    init_std: float = 0.1
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    random_init: bool = False  # paper preset: random weights (speed/memory benchmarks, no download)
    # tiny (and paper with random_init and no tokenizer files): the tokenizer built locally. auto: word
    # level for the synthetic suite (its old behaviour), byte-level BPE (+ chat template) otherwise
    tokenizer_kind: str = "auto"  # auto | word | bpe
    bpe_vocab_size: int = 2048

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, ("tiny", "paper"))
        check_choice("arch", self.arch, ("qwen2", "llama"))
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_choice("attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))
        check_choice("tokenizer_kind", self.tokenizer_kind, ("auto", "word", "bpe"))
        if self.bpe_vocab_size < 259:
            raise ConfigError("bpe_vocab_size", f"must be >= 259 (256 bytes + 3 specials), got {self.bpe_vocab_size}")
        for name in ("hidden_size", "n_layers", "n_heads", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.init_std <= 0:
            raise ConfigError("init_std", f"must be > 0, got {self.init_std}")
        if self.hidden_size % self.n_heads:
            raise ConfigError("n_heads", f"hidden_size={self.hidden_size} is not divisible by "
                              f"n_heads={self.n_heads}")
        if self.n_kv_heads < 0 or (self.n_kv_heads and self.n_heads % self.n_kv_heads):
            raise ConfigError("n_kv_heads",
                              f"must be 0 or divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        if self.preset == "paper" and not self.name_or_path and not self.random_init:
            raise ConfigError("name_or_path", "the paper preset loads weights: set name_or_path "
                              "(local dir or hub id), or random_init: true")


PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    projector: str = "mlp2x_gelu"  # linear | mlp2x_gelu
    # where the visual tokens go when the prompt has no <video> placeholder: "start" (LLaVA style,
    # before the text) or "before_last_line" (after the question and options, before the instruction)
    video_position: str = "start"
    # learned absolute time/slot embeddings added to the visual tokens (harness.model.projector)
    visual_pos: str = "time_slot"  # time_slot | none

    def __post_init__(self) -> None:
        check_choice("projector", self.projector, PROJECTOR_TYPES)
        check_choice("visual_pos", self.visual_pos, ("none", "time_slot"))
        check_choice("video_position", self.video_position, ("start", "before_last_line"))


@dataclass
class DataConfig:
    """What a run trains on and how its videos become encoder input (see docs/data.md).

    ``dataset`` names a plug-in of :mod:`harness.data.datasets` (``synthetic``: the suite at ``suite``;
    ``llava_video``: LLaVA-Video-178K / LLaVA-NeXT conversation records, a mixture in ``args``); each
    dataset validates its own keys (``families``, ``synthetic``, ``args``). Frames: ``n_frames`` per
    video (a cap under ``fps`` sampling), ``uniform`` or ``fps`` sampling, resized for the encoder.
    ``feature_cache``: ``auto`` (on for ``synthetic``, off otherwise: the encoder then runs online on the
    training device), ``on`` / ``off``; ``cache_budget_gb`` caps what a run adds to ``cache_dir``.
    ``chat_template``: ``auto`` (``plain`` for ``synthetic``, whose native scorer reads plain prompts;
    the tokenizer's own chat template for conversation datasets), ``plain`` or ``chat``.
    ``max_length`` (0: the LLM's ``max_position_embeddings``) truncates text, never visual tokens: an
    item whose visual tokens would not fit is skipped. Items that fail (missing / damaged video,
    malformed record, too long) are skipped and counted; a failure rate above ``max_failure_rate`` (over
    at least ``min_failure_sample`` attempts) stops the run with the list."""

    dataset: str = "synthetic"
    suite: str = "results/data/mia_synthetic"
    families: list[str] = field(default_factory=list)  # empty: all; names or groups ("long", a source name)
    args: dict[str, Any] = field(default_factory=dict)  # dataset-specific (llava_video: mixture, ...)
    n_frames: int = 16
    sampling: str = "uniform"  # uniform | fps
    fps: float = 1.0  # sampling: fps only
    cache_dir: str = "results/cache/features"
    manifest_dir: str = "results/cache/manifests"
    max_train_items: int = 0  # 0: all
    # SuiteSpec fields ({clutter: 0, noise: 0}) for a suite the sweep generates when data.suite is missing;
    # an existing suite must have been made with them. Empty: the defaults of `make-synthetic`.
    synthetic: dict[str, Any] = field(default_factory=dict)
    chat_template: str = "auto"  # auto | plain | chat
    max_length: int = 0  # 0: the LLM's max_position_embeddings
    workers: int = 0  # DataLoader worker processes (0: decode in the training process)
    feature_cache: str = "auto"  # auto | on | off
    cache_budget_gb: float = 0.0  # 0: no limit
    max_failure_rate: float = 0.05
    min_failure_sample: int = 50

    def __post_init__(self) -> None:
        check_choice("sampling", self.sampling, ("uniform", "fps"))
        check_choice("chat_template", self.chat_template, ("auto", "plain", "chat"))
        check_choice("feature_cache", self.feature_cache, ("auto", "on", "off"))
        if not 1 <= self.n_frames <= 4096:
            raise ConfigError("n_frames", f"must be in [1, 4096], got {self.n_frames}")
        if self.fps <= 0:
            raise ConfigError("fps", f"must be > 0, got {self.fps}")
        for name in ("max_train_items", "max_length", "workers", "min_failure_sample"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.cache_budget_gb < 0:
            raise ConfigError("cache_budget_gb", f"must be >= 0 (0 = no limit), got {self.cache_budget_gb}")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError("max_failure_rate", f"must be in [0, 1], got {self.max_failure_rate}")
        from harness.data.datasets import DATASETS, get_dataset  # lazy: harness.data.datasets imports this module

        check_choice("dataset", self.dataset, list(DATASETS))
        get_dataset(self.dataset).validate(self)  # dataset-specific keys: raises ConfigError


TRAIN_MODULES = ("compressor", "projector", "llm")


@dataclass
class TrainStage:
    """One training stage: from optimizer step ``start_step`` (inclusive) to the next stage's start (or
    ``train.steps``), only ``train_modules`` get gradients; each stage has its own AdamW, warm-up and
    cosine decay. ``lr`` 0 and ``warmup_steps`` -1 inherit ``train.lr`` / ``train.warmup_steps``.
    ``families`` (names or groups, a subset of ``data.families``) restricts the stage's training items,
    as LLaVA-style recipes change data between stages; empty: all of the run's training items.
    ``start_frac`` (>= 0) places the start at ``ceil(start_frac * train.steps)`` instead."""

    start_step: int = 0
    train_modules: list[str] = field(default_factory=lambda: ["compressor", "projector"])
    lr: float = 0.0
    warmup_steps: int = -1
    families: list[str] = field(default_factory=list)
    # >= 0: start at this fraction of train.steps (replaces start_step), so that shortening a run with
    # train.steps=... keeps the stages' proportions
    start_frac: float = -1.0

    def __post_init__(self) -> None:
        if self.start_step < 0:
            raise ConfigError("start_step", f"must be >= 0, got {self.start_step}")
        if not self.train_modules:
            raise ConfigError("train_modules", f"must name at least one of {TRAIN_MODULES}")
        for i, m in enumerate(self.train_modules):
            check_choice(f"train_modules[{i}]", m, TRAIN_MODULES)
        if self.lr < 0:
            raise ConfigError("lr", f"must be >= 0 (0 = train.lr), got {self.lr}")
        if self.start_frac != -1.0 and not 0 <= self.start_frac < 1:
            raise ConfigError("start_frac", f"must be in [0, 1) (or -1: use start_step), got {self.start_frac}")
        # ``families`` names the dataset's groups: checked by the dataset in RunConfig.__post_init__


@dataclass
class TrainConfig:
    """Optimisation of one run. ``batch_size`` is per process and micro-step; one optimizer step sees
    ``batch_size * grad_accum * world_size`` items. ``train_modules`` empty means the preset's choice
    (tiny: everything, since its LLM is random; paper: compressor + projector); ``stages`` (if given)
    overrides it per step range (the paper: compressor + projector first, then the LLM too)."""

    steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    train_modules: list[str] = field(default_factory=list)
    stages: list[TrainStage] = field(default_factory=list)
    bf16: bool = True  # autocast on GPU only
    parallel: str = "auto"  # auto (fsdp for the paper preset, else ddp) | ddp | fsdp
    checkpoint_every: int = 100
    log_every: int = 10
    max_grad_norm: float = 1.0
    # experiment trackers the run also reports to (harness.trackers: wandb, tensorboard, mlflow), as the
    # transformers Trainer's report_to. Where a run reports, not what it computes: left out of the run id
    # and config_hash (UNHASHED_FIELDS), so adding a tracker reuses finished results and checkpoints
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.report_to:
            from harness.trackers import TRACKERS  # lazy: harness.trackers imports this module

            for i, name in enumerate(self.report_to):
                check_choice(f"report_to[{i}]", name, TRACKERS)
            if len(set(self.report_to)) != len(self.report_to):
                raise ConfigError("report_to", f"a tracker is named twice in {self.report_to}")
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        for i, m in enumerate(self.train_modules):
            check_choice(f"train_modules[{i}]", m, TRAIN_MODULES)
        check_choice("parallel", self.parallel, ("auto", "ddp", "fsdp"))
        for st in self.stages:
            if st.start_frac >= 0:
                st.start_step = math.ceil(st.start_frac * self.steps)
        if self.stages:
            starts = [s.start_step for s in self.stages]
            if starts[0] != 0:
                raise ConfigError("stages[0].start_step",
                                  f"the first stage must start at step 0, got {starts[0]}")
            for i in range(1, len(starts)):
                if not starts[i - 1] < starts[i] < self.steps:
                    raise ConfigError(f"stages[{i}].start_step",
                                      f"must be increasing and < steps={self.steps}, got {starts}")


#: evaluation-time model args of the lmms-eval plugin that ``eval.model_args`` may set (recorded with the run)
PLUGIN_EVAL_ARGS = ("max_frames_num", "fps", "chat_template", "max_new_tokens", "taa_threshold",
                    "taa_max_frames", "max_cached_videos", "cache_dir")


@dataclass
class EvalConfig:
    """Scoring of one trained run. ``backend: native`` scores the suite's items in-process by option
    log-likelihood (or generation); ``lmms_eval`` runs lmms-eval on the ``tasks`` (``lmms_eval_launch``:
    ``cli`` = the real ``lmms-eval`` command in a subprocess, ``inprocess`` = its Python evaluator)."""

    tasks: list[str] = field(default_factory=lambda: ["mia_long", "mia_dense"])
    mode: str = "loglik"  # loglik | generate
    backend: str = "native"  # native (in-process scorer) | lmms_eval (the real CLI's evaluator)
    lmms_eval_launch: str = "cli"  # cli | inprocess
    split: str = "test"
    limit: int = 0  # 0: all items
    batch_size: int = 16
    # lmms_eval backend: the plugin's evaluation-time args (PLUGIN_EVAL_ARGS), e.g. {max_frames_num: 64}
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("loglik", "generate"))
        bad = sorted(set(self.model_args) - set(PLUGIN_EVAL_ARGS))
        if bad:
            raise ConfigError(f"model_args.{bad[0]}", f"unknown plugin arg; allowed: {', '.join(PLUGIN_EVAL_ARGS)}")
        check_choice("backend", self.backend, ("native", "lmms_eval"))
        check_choice("lmms_eval_launch", self.lmms_eval_launch, ("cli", "inprocess"))
        if self.limit < 0:
            raise ConfigError("limit", f"must be >= 0 (0 = all), got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class RunConfig:
    """Everything one train+eval job needs; its hash is the run id."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    # lmm: compressor -> projector -> LLM (harness.train / harness.evaluate); probe: compressor -> fixed
    # read-out, cross-entropy over fixed options (harness.probe; the compress families only)
    protocol: str = "lmm"

    def __post_init__(self) -> None:
        check_choice("protocol", self.protocol, ("lmm", "probe"))
        from harness.data.datasets import get_dataset  # lazy: harness.data.datasets imports this module

        ds = get_dataset(self.data.dataset)
        for i, st in enumerate(self.train.stages):
            ds.check_groups(st.families, f"train.stages[{i}].families")


@dataclass
class ComputeProfile:
    """Where and how a sweep's jobs run; loaded from ``slurm/<name>.yaml`` by ``--profile``."""

    executor: str = "local"  # local | slurm | debug
    partition: str = ""
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    time_min: int = 60
    array_parallelism: int = 16
    qos: str = ""
    account: str = ""
    max_parallel_local: int = 0  # 0: os.cpu_count() // cpus_per_task
    additional_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH ..." option strings
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    # slurm: processes per run (--ntasks-per-node); > 1 trains with torch.distributed (DDP / FSDP), one
    # process per GPU, rank 0 evaluates and writes the record
    tasks_per_node: int = 1

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, ("local", "slurm", "debug"))
        if self.tasks_per_node < 1:
            raise ConfigError("tasks_per_node", f"must be >= 1, got {self.tasks_per_node}")
