"""The compressor registry: every way of turning frame features (B, T, P, d_in) into LLM tokens (B, N, d_out).

As lmms-eval registers models and :mod:`harness.data.datasets` registers datasets, each compressor is a
named nn.Module class with its own config dataclass (a subclass of :class:`CompressorConfigBase`), next to
its code, registered with :func:`register_compressor`::

    @register_compressor("fastvid", FastVIDConfig, training_free=True)
    class FastVID(ReducerCompressor): ...

A study then says ``model.compressor.name: fastvid`` and sweeps that entry's own fields
(``model.compressor.tau``). A *preset* is a name for an entry with some fields set (the five-way names
``proposed``, ``self_attention``, ``bimba``, ``pooling``, ``vanilla`` are presets of ``mambamia``); the
fields a config gives win over the preset's.

Where entries come from (:func:`discover`, once, on first use): every module of the package
:mod:`harness.model.compressors` (adding a compressor is one new file there) and every module named by
an entry point of the group ``mambamia_harness.compressors`` (a third-party package). This module itself
imports no torch: the run-level config (:mod:`harness.config`) validates compressor configs through it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import pkgutil
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.schema import ConfigError, build, deep_merge

DEFAULT_COMPRESSOR = "mambamia"
ENTRY_POINT_GROUP = "mambamia_harness.compressors"
PACKAGE = "harness.model.compressors"


@dataclass
class CompressorConfigBase:
    """What every compressor's config has: ``name`` (its registry entry or preset) and the widths.

    ``d_in``: encoder feature width; ``d_model``: the compressor's own width; ``d_out``: the width of the
    tokens it hands to the projector. Subclasses add their fields and implement :meth:`count_tokens`
    (and :meth:`meet_budget` to take part in matched-budget studies)."""

    name: str = DEFAULT_COMPRESSOR
    d_in: int = 64
    d_model: int = 64
    d_out: int = 64

    def __post_init__(self) -> None:
        for f in ("d_in", "d_model", "d_out"):
            if getattr(self, f) < 1:
                raise ConfigError(f, f"must be >= 1, got {getattr(self, f)}")

    @classmethod
    def dispatch(cls, value: dict[str, Any], path: str) -> tuple[type, dict[str, Any]]:
        """The concrete config class named by ``value['name']`` and the value with its preset laid under."""
        name = value.get("name", DEFAULT_COMPRESSOR)
        entry = get_entry(name, f"{path}.name" if path else "name")
        return entry.config_cls, deep_merge(entry.preset, {**value, "name": name})

    @classmethod
    def field_hints(cls) -> dict[str, Any]:
        """Every field of every registered entry's config, with its type (the first entry's where two
        differ): what a dotted path under ``model.compressor`` may name before its entry is known."""
        discover()
        out: dict[str, Any] = {}
        for e in sorted(COMPRESSORS.values(), key=lambda e: e.name):
            for k, v in typing.get_type_hints(e.config_cls).items():
                out.setdefault(k, v)
        return out

    # --- what the planner and the model ask of every config ------------------------------------------
    @property
    def tokenwise(self) -> bool:
        """Whether the learned part maps each token on its own (``in_proj`` -> ``out_norm`` ->
        ``out_proj``), so that one such compressor's weights load into another (evaluation-only swaps)."""
        return False

    @property
    def exact_count(self) -> bool:
        """Whether :meth:`count_tokens` is the count of every video (False: an upper bound)."""
        return True

    def count_tokens(self, T: int, P: int) -> int:
        """Tokens passed to the LLM for one video of T frames x P patches."""
        raise NotImplementedError(f"{type(self).__name__}.count_tokens")

    def meet_budget(self, tokens: int, T: int, P: int, by: str) -> CompressorConfigBase:
        """This config changed so that :meth:`count_tokens` is ``tokens`` for T x P input (ConfigError,
        naming why, when it cannot). ``by`` (``period`` | ``cut``) is how trained compressors meet it."""
        raise ConfigError("model.visual_tokens", f"compressor {self.name!r} cannot be matched to a token budget")


@dataclass(frozen=True)
class CompressorEntry:
    """One registry name: the module class, its config class, the preset fields and what kind it is."""

    name: str
    module_cls: type
    config_cls: type
    preset: dict[str, Any] = field(default_factory=dict)
    training_free: bool = False  # a reducer: no learned selection (its token-wise maps may still train)
    base: str = ""  # a preset: the entry it presets
    doc: str = ""


COMPRESSORS: dict[str, CompressorEntry] = {}
_discovered = False
_lock = threading.Lock()


def register_compressor(name: str, config_cls: type, *, presets: dict[str, dict[str, Any]] | None = None,
                        training_free: bool = False) -> Callable[[type], type]:
    """Class decorator: add ``name`` (and each preset) to the registry. A name taken by another class is
    an error (two plug-ins must not silently shadow each other)."""
    if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, CompressorConfigBase)):
        raise TypeError(f"compressor {name!r}: its config must be a dataclass subclass of CompressorConfigBase")

    def deco(module_cls: type) -> type:
        doc = (module_cls.__doc__ or "").strip().split("\n")[0]
        entries = [CompressorEntry(name, module_cls, config_cls, {}, training_free, "", doc)]
        for pname, fields in (presets or {}).items():
            entries.append(CompressorEntry(pname, module_cls, config_cls, dict(fields), training_free, name,
                                           f"preset of {name}: " + ", ".join(f"{k}={v}" for k, v in fields.items())))
        for e in entries:
            old = COMPRESSORS.get(e.name)
            if old is not None and (old.module_cls is not module_cls or old.preset != e.preset):
                raise ValueError(f"compressor name {e.name!r} is registered twice ({old.module_cls.__module__} "
                                 f"and {module_cls.__module__})")
            COMPRESSORS[e.name] = e
        return module_cls

    return deco


def discover() -> None:
    """Import every compressor module once: the package's modules, then the entry points' modules."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        pkg = importlib.import_module(PACKAGE)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{PACKAGE}.{info.name}")
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            importlib.import_module(ep.value.split(":")[0])
        _discovered = True


def compressor_names() -> list[str]:
    discover()
    return sorted(COMPRESSORS)


def get_entry(name: Any, path: str = "model.compressor.name") -> CompressorEntry:
    """The entry called ``name``; an unknown one is a ConfigError with a suggestion and the known names."""
    discover()
    if isinstance(name, str) and name in COMPRESSORS:
        return COMPRESSORS[name]
    names = sorted(COMPRESSORS)
    hint = difflib.get_close_matches(str(name), names, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(path, f"unknown compressor {name!r}{extra}; registered: {', '.join(names)}")


def default_config() -> CompressorConfigBase:
    """The default compressor config (``mambamia`` with its defaults)."""
    return build_config({})


def build_config(value: dict[str, Any] | CompressorConfigBase | None) -> CompressorConfigBase:
    """A compressor config from a mapping (``name`` picks the entry; strictly validated)."""
    if isinstance(value, CompressorConfigBase):
        return value
    cls, data = CompressorConfigBase.dispatch(dict(value or {}), "")
    try:
        return build(cls, data)
    except ConfigError as e:
        raise ConfigError(f"model.compressor.{e.path}", e.message) from None


def build_compressor(cfg: CompressorConfigBase | dict[str, Any] | None = None) -> Any:
    """The nn.Module of a compressor config (or of a plain mapping, strictly validated)."""
    cfg = build_config(cfg)
    return get_entry(cfg.name).module_cls(cfg)


def compressor_facts(cfg: CompressorConfigBase) -> dict[str, Any]:
    """What a run record says of its compressor: its name, whether it is training-free, its entry."""
    e = get_entry(cfg.name)
    return {"compressor": cfg.name, "compressor_entry": e.base or e.name, "training_free": e.training_free}


def wants_saliency(cfg: CompressorConfigBase) -> bool:
    """Whether a compressor reads the encoder's attention over the patches: its module says so
    (``uses_saliency``, the reducers whose rule ranks by attention) and its config lets it (``saliency:
    auto``, not ``l2_norm``). The data path then fetches the encoder's saliency, where the encoder has one."""
    cfg = build_config(cfg)
    return bool(getattr(get_entry(cfg.name).module_cls, "uses_saliency", False)) and \
        getattr(cfg, "saliency", "l2_norm") == "auto"


def describe() -> list[dict[str, Any]]:
    """One row per registered name: name, kind, what it presets, its first doc line (``--list``)."""
    discover()
    return [{"name": e.name, "kind": "training-free" if e.training_free else "trained", "preset_of": e.base,
             "doc": e.doc} for e in sorted(COMPRESSORS.values(), key=lambda e: (e.training_free, e.name))]
