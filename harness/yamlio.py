"""Strict YAML for every file and command-line value the harness reads.

:class:`StrictLoader` is PyYAML's ``SafeLoader`` (no object construction) with two changes:

* a key repeated in one mapping is an error naming both lines, not "the last one wins" (a study that
  sets ``lr`` twice would otherwise silently run the second value);
* numbers in exponent form without a dot (``1e-3``, ``2E5``, ``1.0e3``) are floats, as in YAML 1.2 and
  JSON. PyYAML follows YAML 1.1, whose float pattern needs a dot and a signed exponent, so ``1e-3``
  would be the *string* ``"1e-3"`` and a config's float field would refuse it.

:func:`load_yaml_file` reads a file through it and names the file, and the line of the first bad byte
when the file is not UTF-8. :func:`load_yaml_text` does the same for a string.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["StrictLoader", "YamlFileError", "load_yaml_file", "load_yaml_text"]

# YAML 1.2 core schema floats that YAML 1.1 reads as strings: an exponent without a dot, or an exponent
# without a sign (1.1 needs both). Forms with a dot and a signed exponent are already 1.1 floats.
_FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$""")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlFileError(ValueError):
    """A YAML file or value that cannot be read; the message names the file (or value) and the line."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader + duplicate keys are errors + YAML 1.2 exponent floats (see the module docstring)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:  # `<<: *anchor`: its keys may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeConstructor reports it below
                    continue
                if first is not None:
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"duplicate key {key!r} (first set at line {first.start_mark.line + 1}); "
                        "a key may appear once per mapping", key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse ``text`` with :class:`StrictLoader`; :class:`YamlFileError` names ``source`` and the line."""
    loader = StrictLoader(text)
    loader.name = source  # marks say `in "<file>", line N` instead of "<unicode string>"
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise YamlFileError(f"{source}: not valid YAML: {e}") from None
    finally:
        loader.dispose()


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text (a BOM is dropped); a bad byte is named with its line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YamlFileError(f"{source}: line {line}, column {col}: not UTF-8 text (byte "
                            f"0x{data[e.start]:02x}); save the file as UTF-8") from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file strictly (see the module docstring)."""
    p = Path(path)
    return load_yaml_text(decode_utf8(p.read_bytes(), str(path)), str(path))
