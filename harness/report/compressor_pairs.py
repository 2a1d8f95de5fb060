"""Paired comparisons between named compressors at each x value; a plugin (``report.plugins``).

A five-way study's compressors differ in several axes at once (a ``zip``), so ``report.compare``, which
pairs values of the x axis at equal other axes, cannot pair them. ``report.compressor_compare: [[a, b], ...]``
names pairs of compressors from ``report.compressors`` (``harness.report.figures_v2``); table
``compressor_pairs`` gives, per pair and per x value (frames), the paired difference ``a - b`` on the
study's score over shared seeds (mean ± 95 % Student-t interval, p) and the verdict in words: significant
when the interval excludes 0, no verdict below 3 pairs (``findings.verdict``). Its notes sum the verdicts
up per pair, whichever way they fall.
"""

from __future__ import annotations

from typing import Any

from harness.report import style
from harness.report.data import ReportError, StudyData, Variant, fmt_value
from harness.report.figures_v2 import compressor_specs, series
from harness.report.findings import verdict
from harness.report.stats import paired
from harness.report.tables import Cell, Column, Table, protocol_note, register_table


def compressor_compare(study: StudyData) -> list[tuple[str, str]]:
    """``report.compressor_compare`` checked against the names of ``report.compressors``."""
    raw = study.report.get("compressor_compare") or []
    names = [n for n, _ in compressor_specs(study)]
    out = []
    for i, p in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ReportError(f"{study.index_path}: report.compressor_compare[{i}] must be a pair [a, b], got {p!r}")
        for name in p:
            if str(name) not in names:
                raise ReportError(f"{study.index_path}: report.compressor_compare[{i}]: {name!r} is not a name of "
                                  f"report.compressors ({', '.join(names) or 'none'})")
        out.append((str(p[0]), str(p[1])))
    return out


def _by_x(study: StudyData, variants: list[Variant]) -> dict[str, Variant]:
    return {fmt_value(v.values.get(study.x)): v for v in variants}


@register_table("compressor_pairs")
def compressor_pairs(study: StudyData, options: dict[str, Any]) -> Table | None:
    """a - b on the study's score per x value, for each pair of ``report.compressor_compare``."""
    pairs = compressor_compare(study)
    if not pairs or study.x is None:
        return None
    lines = series(study)
    scale = study.scale()
    unit = "pp" if scale == 100 else ""
    cols = [Column("a", "A"), Column("b", "B"), Column("x", study.x), Column("delta", f"Δ (A − B) {unit}".strip(),
            "stat", signed=True), Column("p", "p", "num", digits=3), Column("seeds", "Paired seeds"),
            Column("verdict", "Verdict")]
    rows, notes = [], []
    for a, b in pairs:
        va, vb = _by_x(study, lines.get(a, [])), _by_x(study, lines.get(b, []))
        tally: dict[str, list[str]] = {}
        for x in [fmt_value(k) for k in study.axis_order.get(study.x, [])]:
            if x not in va or x not in vb:
                continue
            pr = paired(study.score_values(va[x]), study.score_values(vb[x]))
            word = verdict(pr)
            if word == "significant":
                word = f"significant: {a if pr.diff.mean > 0 else b} better"
            tally.setdefault(word, []).append(x)
            rows.append([Cell(text=a), Cell(text=b), Cell(text=x), Cell(stat=pr.diff.scaled(scale)),
                         Cell(num=pr.p_value), Cell(text=str(pr.diff.n)), Cell(text=word)])
        if tally:
            notes.append(f"{a} vs {b}: " + "; ".join(f"{w} at {study.x} {', '.join(xs)}" for w, xs in tally.items())
                         + ".")
    caption = (f"{study.name}: compressors compared at each {study.x} on {style.metric_title(study.metric)} "
               f"({study.score_name}), paired over seeds, mean ± 95% CI.")
    return Table("table_compressor_pairs", caption, cols, rows, notes + [protocol_note(study)],
                 f"tab:{study.name}-pairs")
