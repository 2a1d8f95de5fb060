"""The problems of a study spec, reported all at once: in file order, with their line, consequences marked.

Every check of :func:`harness.sweep.spec.validate` appends to one list; a problem is a ``(key path,
message)`` pair, or a :class:`Problem` (the same pair, which compares and unpacks as one) that also says
which problem it follows from (``cause``: that problem's key path) or which ``--set`` it came from
(``source``). A new section of the spec adds its checks by appending pairs to that list; nothing else is
needed. :func:`in_file_order` then sorts them as the file reads (``--set`` problems first, a consequence
never before its cause) and attaches each one's line, and :class:`~harness.sweep.spec.SpecError` prints
them, one line each, as ruff or pydantic do::

    x.yaml: grid.model.compresor.block: unknown key 'compresor' in model (did you mean ...)  [line 30]
    x.yaml: labels.model.compressor.block: not an axis ...  [line 35, follows from grid.model.compresor.block]

:func:`clean_config` is ``harness.config.build`` that does not stop at the first bad key: it reports
one, takes the key out, and builds again (the axes are then checked against what is left).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, build
from harness.yamlio import StrictLoader


class Problem(tuple):
    """``(path, message)`` with ``cause`` (the key path of the problem this one follows from), ``source``
    (a ``--set`` it came from, instead of the file) and ``line`` (1-based, in the file)."""

    cause: str | None
    source: str | None
    line: int | None

    def __new__(cls, path: str, message: str, cause: str | None = None, source: str | None = None,
                line: int | None = None) -> Problem:
        self = super().__new__(cls, (path, message))
        self.cause, self.source, self.line = cause, source, line
        return self

    @property
    def path(self) -> str:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]

    def with_line(self, line: int | None) -> Problem:
        return Problem(self.path, self.message, self.cause, self.source, line)


def as_problem(p: tuple[str, str] | Problem) -> Problem:
    return p if isinstance(p, Problem) else Problem(str(p[0]), str(p[1]))


def describe(p: tuple[str, str] | Problem, source: str) -> str:
    """One problem as one line: ``<file>: <key path>: <message>  [line N, follows from <key>]``."""
    p = as_problem(p)
    notes = ([f"line {p.line}"] if p.line else []) + ([f"follows from {p.cause}"] if p.cause else [])
    return f"{p.source or source}: {p.path or '<root>'}: {p.message}" + (f"  [{', '.join(notes)}]" if notes else "")


# --------------------------------------------------------------------------------------------- where
def compose(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (its keys with their lines), or None when it does not parse."""
    try:
        return yaml.compose(text, Loader=StrictLoader)
    except yaml.YAMLError:
        return None


_INDEX = re.compile(r"\[(\d+)\]\.?")


def locate(path: str, node: yaml.Node | None) -> int | None:
    """The 1-based line of key path ``path`` (``grid.model.compressor.block[1]``, ``base.train.steps``) in
    the node tree, or of the deepest part of it the file has; None when the file has none of it. A mapping
    key may itself hold dots (grid axes): the longest key that starts the rest of the path wins."""
    line, rest = None, path
    while rest and node is not None:
        m = _INDEX.match(rest)
        if m:
            if not isinstance(node, yaml.SequenceNode) or int(m[1]) >= len(node.value):
                break
            node = node.value[int(m[1])]
            line, rest = node.start_mark.line + 1, rest[m.end():]
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        best = None
        for k, v in node.value:
            key = str(k.value)
            if (rest == key or rest.startswith(key + ".") or rest.startswith(key + "[")) and (
                    best is None or len(key) > len(str(best[0].value))):
                best = (k, v)
        if best is None:
            break
        k, node = best
        line, rest = k.start_mark.line + 1, rest[len(str(k.value)):]
        rest = rest[1:] if rest.startswith(".") else rest
    return line


def in_file_order(problems: Iterable[tuple[str, str] | Problem], text: str | None) -> list[Problem]:
    """``problems`` with their lines, sorted: ``--set`` problems first (as given), then the file's by
    line (a consequence never before the problem it follows from), then those the file has no line for
    (in check order)."""
    tree = compose(text) if text else None
    probs = [as_problem(p) for p in problems]
    located = [p.with_line(None if p.source else locate(p.path, tree)) for p in probs]
    far = 1 << 30

    def key(item: tuple[int, Problem]) -> tuple[int, int, int, int]:
        i, p = item
        own = p.line or far
        cause = (locate(p.cause, tree) or far) if p.cause else 0
        return (0 if p.source else 1, max(own, cause), 1 if p.cause else 0, i)  # never before its cause

    return [p for _, p in sorted(enumerate(located), key=key)]


# ------------------------------------------------------------------------------------ config checks
def _pop_path(d: dict[str, Any], dotted: str) -> bool:
    """Remove ``a.b[2].c`` from nested ``d``; False when it is not there."""
    parts = [p for p in re.split(r"\.|(\[\d+\])", dotted) if p]
    cur: Any = d
    for part in parts[:-1]:
        m = re.fullmatch(r"\[(\d+)\]", part)
        if m and isinstance(cur, list) and int(m[1]) < len(cur):
            cur = cur[int(m[1])]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return False
    last = parts[-1] if parts else ""
    m = re.fullmatch(r"\[(\d+)\]", last)
    if m and isinstance(cur, list) and int(m[1]) < len(cur):
        del cur[int(m[1])]
        return True
    if isinstance(cur, dict) and last in cur:
        del cur[last]
        return True
    return False


def clean_config(cls: type, data: dict[str, Any], limit: int = 50
                 ) -> tuple[list[tuple[str, str]], dict[str, Any], bool]:
    """Every ``(key path, message)`` ``build(cls, data)`` raises, not only the first: each bad key is taken
    out and the rest built again. Returns the problems, ``data`` without the bad keys, and whether that
    builds (False when a refusal names a key ``data`` does not set, e.g. a default another key breaks)."""
    d, out = copy.deepcopy(data), []
    for _ in range(limit):
        try:
            build(cls, d)
            return out, d, True
        except ConfigError as e:
            out.append((e.path, e.message))
            if not _pop_path(d, e.path):
                break
    return out, d, False


def build_problems(cls: type, data: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems of :func:`clean_config`."""
    return clean_config(cls, data)[0]


def close_match(key: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``key`` is (or is a misspelling of), or None."""
    known = list(known)
    if key in known:
        return key
    hit = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return hit[0] if hit else None


def names_x_values(path: str) -> bool:
    """Whether a report problem at ``path`` is about values of the x axis (compare pairs, claims)."""
    return path.startswith(("report.compare[", "report.claims["))


def apply_each(apply: Callable[[dict[str, Any], list[str]], dict[str, Any]], error: type[Exception],
               doc: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[Problem]]:
    """Apply the ``--set`` strings one at a time (``apply(doc, [text])``), collecting the problems of every
    one that ``error`` refuses (each with its ``--set`` as source) instead of stopping at the first."""
    probs: list[Problem] = []
    for text in overrides:
        try:
            doc = apply(doc, [text])
        except error as e:
            probs += [Problem(str(q[0]), str(q[1]), source=getattr(e, "source", None)) for q in e.problems]
    return doc, probs


def file_text(path: Path) -> str | None:
    """A spec file's text, for the lines of its problems (None if it cannot be read again)."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None
