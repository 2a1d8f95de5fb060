"""The one ``key.path=value`` override parser of every CLI (harness.train, harness.evaluate,
harness.sweep ``--set``).

Values are YAML read by :class:`harness.yamlio.StrictLoader`: ``200`` is an int, ``1e-3`` a float (YAML
1.2 rules), ``true`` a bool, ``[0, 1]`` a list, ``{noise: 0}`` a mapping, anything else a string; an
empty value is the empty string. A key is checked against the config tree *before* it is applied, so a
typo is blamed on the override that holds it::

    override 'train.lrr=1e-3': unknown key 'lrr' in train (did you mean 'lr'?); known keys: steps, ...

and never on the file the other values came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable
from typing import Any, get_origin

from harness.config import ConfigError, RunConfig, set_by_path
from harness.yamlio import YamlFileError, load_yaml_text

__all__ = ["OverrideError", "apply_overrides", "blame", "check_config_path", "parse_override", "parse_value"]


class OverrideError(ConfigError):
    """A ``key=value`` override that cannot be read or names no config key; ``source`` is the override."""

    def __init__(self, text: str, path: str, message: str):
        super().__init__(path, message, source=f"override {text!r}")
        self.text = text


def parse_value(raw: str, text: str | None = None) -> Any:
    """An override's value: YAML with 1.2 float rules (``1e-3`` -> 0.001); ``""`` stays ``""``."""
    if not raw.strip():
        return ""
    try:
        return load_yaml_text(raw, source="value")
    except YamlFileError as e:
        raise OverrideError(text or raw, "", f"cannot read the value {raw!r} as YAML: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=200"`` -> ``("train.steps", 200)``; raises :class:`OverrideError` if malformed."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq:
        raise OverrideError(text, key, "expected KEY=VALUE, e.g. train.steps=200 or train.lr=1e-3")
    if not key or any(not p for p in key.split(".")):
        raise OverrideError(text, key, "empty key or key part (expected a dotted path like train.steps)")
    return key, parse_value(raw, text)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def check_config_path(dotted: str, cls: type = RunConfig) -> None:
    """Raise :class:`ConfigError` unless ``dotted`` names a field of dataclass ``cls`` (a leaf, a node,
    or a key inside a mapping-typed field such as ``model.encoder.config.pos_scale``)."""
    tp: Any = cls
    done: list[str] = []
    for part in dotted.split("."):
        if get_origin(tp) is dict or tp is Any:
            return  # free-form mapping (encoder.config, data.synthetic): its owner validates the keys
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(dotted, f"{'.'.join(done)!r} is a value ({getattr(tp, '__name__', tp)}), "
                              "it has no sub-keys")
        # polymorphic (the compressor): a key of any registered entry's config; the entry checks the rest
        hints = tp.field_hints() if hasattr(tp, "field_hints") else typing.get_type_hints(tp)
        if part not in hints:
            where = ".".join(done) or "the run config"
            raise ConfigError(dotted, f"unknown key {part!r} in {where}{_did_you_mean(part, hints)}; "
                              f"known keys: {', '.join(hints)}")
        tp = hints[part]
        done.append(part)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str], cls: type = RunConfig) -> dict[str, Any]:
    """Apply ``key.path=value`` strings to the config dict ``data`` in place (and return it). Every key is
    checked against ``cls`` first; errors are :class:`OverrideError` naming the override."""
    for text in overrides:
        key, value = parse_override(text)
        try:
            check_config_path(key, cls)
            set_by_path(data, key, value)
        except ConfigError as e:
            raise OverrideError(text, e.path, e.message) from None
    return data


def blame(error: ConfigError, overrides: Iterable[str]) -> ConfigError:
    """``error`` (from building a config) re-sourced to the last override that set its key or a key above
    or below it (``train.lr=abc`` -> "override 'train.lr=abc': train.lr: expected a number"); else as is."""
    for text in reversed(list(overrides)):
        key = text.partition("=")[0].strip()
        if error.path == key or error.path.startswith(key + ".") or key.startswith(error.path + "."):
            return OverrideError(text, error.path, error.message)
    return error
