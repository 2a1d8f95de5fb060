"""Plain dataclass configs: one strict dict -> dataclass builder, the error it raises, and the hash.

``build(Cls, d)`` turns a nested dict (from YAML or the command line) into a tree of dataclasses and rejects,
with the full key path, unknown keys (with a "did you mean"), wrong types and values a ``__post_init__``
refuses. ``to_dict`` goes back; ``config_hash`` is stable under key order and defaults.

A field whose type is a dataclass with a ``dispatch(value, path) -> (cls, value)`` classmethod is
polymorphic: the mapping names its concrete class (the compressor registry,
:mod:`harness.model.registry`, picks an entry's config class by ``name``). This module imports nothing of
the harness: every config module builds on it, and the run-level tree (:mod:`harness.config`) on those.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import types
import typing
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



T = TypeVar("T")


# --------------------------------------------------------------------------------------------- builder
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:
            if not hasattr(tp, "dispatch"):
                return tp()
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping for {tp.__name__}, got {type(value).__name__}")
        if hasattr(tp, "dispatch"):  # polymorphic: the mapping names its concrete class
            tp, value = tp.dispatch(value, path)
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


#: fields that say where a run reports or how it is executed, not what it computes: config_hash and the run
#: id leave them out, so that changing them (a tracker added; checkpointing turned on so that a run fits)
#: keeps a run's id, its finished result and its checkpoint
UNHASHED_FIELDS = ("train.report_to", "train.activation_checkpointing", "train.compile_compressor")


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
