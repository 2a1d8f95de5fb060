"""Checks of a study's ``report:`` section at spec time: figure kinds, compare pairs and claims that would
otherwise fail (or be dropped) only after every run trained. Used by :func:`harness.sweep.spec.validate`."""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Iterable
from typing import Any


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def known_figure_kinds(plugins: list[Any]) -> list[str]:
    """The figure kinds the report can draw for a study with ``report.plugins`` (imports the figure
    module, and matplotlib, only when a spec names figures)."""
    figures = importlib.import_module("harness.report.figures")
    for m in plugins:
        importlib.import_module(str(m))
    return sorted(figures.FIGURES)


def _fmt(v: Any) -> str:
    """An axis value as the report compares it (``harness.report.data.fmt_value``)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def check_report(report: dict[str, Any], labels: dict[str, str], axis_values: dict[str, list[Any]]
                 ) -> list[tuple[str, str]]:
    """Problems in ``report.figures`` / ``report.compare`` that would otherwise surface only after every
    run trained. ``labels``: axis path -> label; ``axis_values``: label -> every value it may take."""
    probs: list[tuple[str, str]] = []
    plugins = report.get("plugins") or []
    if not isinstance(plugins, list):
        probs.append(("report.plugins", f"expected a list of module names, got {type(plugins).__name__}"))
        plugins = []
    figs = report.get("figures")
    if figs is not None and not isinstance(figs, list):
        probs.append(("report.figures", f"expected a list of figure kinds, got {type(figs).__name__}"))
    elif figs:
        try:
            kinds = known_figure_kinds(plugins)
        except ImportError as e:
            return [*probs, ("report.plugins", f"cannot import a report plugin: {e}")]
        for i, entry in enumerate(figs):
            kind = entry if isinstance(entry, str) else entry.get("kind") if isinstance(entry, dict) else None
            if not isinstance(kind, str):
                probs.append((f"report.figures[{i}]", f"expected a figure kind or {{kind: ..., ...}}, got {entry!r}"))
            elif kind not in kinds:
                probs.append((f"report.figures[{i}]", f"unknown figure kind {kind!r}{_did_you_mean(kind, kinds)}; "
                                                      f"known: {', '.join(kinds)}"))
            elif isinstance(entry, dict) and "x" in entry and entry["x"] not in labels.values():
                probs.append((f"report.figures[{i}].x", f"{entry['x']!r} is not an axis label"
                                                        f"{_did_you_mean(str(entry['x']), labels.values())}"))
    x = report.get("x") if report.get("x") in labels.values() else min(labels.values(), default=None)
    known = list(dict.fromkeys(_fmt(v) for v in axis_values.get(x or "", [])))

    def value_problem(v: Any) -> str | None:
        if _fmt(v) in known:
            return None
        if x is None:
            return f"{v!r} is not a value of any axis: the study has no axis"
        return (f"{v!r} is not a value of axis {x!r}{_did_you_mean(_fmt(v), known)}; "
                f"values: {', '.join(known) or 'none'}")

    claims = report.get("claims")
    if claims is not None and not isinstance(claims, list):
        probs.append(("report.claims", f"expected a list of {{says, better, worse}}, got {type(claims).__name__}"))
    for i, c in enumerate(claims if isinstance(claims, list) else []):
        if not isinstance(c, dict) or set(c) != {"says", "better", "worse"}:
            probs.append((f"report.claims[{i}]", f"expected {{says: text, better: value, worse: value}}, got {c!r}"))
        elif not isinstance(c["says"], str) or not c["says"].strip():
            probs.append((f"report.claims[{i}].says", "expected the claim in words"))
        else:
            probs += [(f"report.claims[{i}].{k}", why) for k in ("better", "worse")
                      if (why := value_problem(c[k])) is not None]
    compare = report.get("compare")
    if compare is not None and not isinstance(compare, list):
        probs.append(("report.compare", f"expected a list of [a, b] pairs, got {type(compare).__name__}"))
    elif compare:
        for i, pair in enumerate(compare):
            if not isinstance(pair, list) or len(pair) != 2:
                probs.append((f"report.compare[{i}]", f"expected a pair [a, b] of values of axis {x!r}, got {pair!r}"))
                continue
            probs += [(f"report.compare[{i}]", why) for v in pair if (why := value_problem(v)) is not None]
    probs += _compressor_compare_problems(report)
    return probs


def _compressor_compare_problems(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``report.compressor_compare`` pairs must name compressors of ``report.compressors``."""
    pairs = report.get("compressor_compare")
    if pairs is None:
        return []
    comps = report.get("compressors") or []
    names = [str(k) for e in comps for k in e] if isinstance(comps, list) else [str(k) for k in comps]
    if not isinstance(pairs, list):
        return [("report.compressor_compare", f"expected a list of [a, b] pairs, got {type(pairs).__name__}")]
    probs = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, list) or len(pair) != 2:
            probs.append((f"report.compressor_compare[{i}]",
                          f"expected a pair [a, b] of compressor names, got {pair!r}"))
            continue
        probs += [(f"report.compressor_compare[{i}]", f"{n!r} is not a name of report.compressors"
                   f"{_did_you_mean(str(n), names)}; names: {', '.join(names) or 'none'}")
                  for n in pair if str(n) not in names]
    return probs
