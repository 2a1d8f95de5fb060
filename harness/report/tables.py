"""Tables from a study: one model (:class:`Table`), three writers (Markdown, CSV, LaTeX booktabs).

A table kind is a function ``(study, options) -> Table | None`` registered by name in :data:`TABLES`
(``None``: not applicable to this study, e.g. no compare pairs). Built-in kinds:

``main``     rows = variants; a column per suite (mean ± 95% CI over seeds, in %), the mean over suites,
             costs (LLM tokens, TTFT ...) when the runs report them, seeds and run status.
``tasks``    rows = variants; a column per task family (the data of the per-task heatmap).
``compare``  paired differences ``a - b`` over shared seeds for each ``report.compare`` pair.

Another kind (e.g. reported vs reproduced numbers) is one decorated function anywhere::

    from harness.report.tables import Table, Column, Cell, register_table
    @register_table("reported_vs_reproduced")
    def _rvr(study, options): ...
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.report import style
from harness.report.data import ReportError, StudyData, Variant, fmt_value
from harness.report.stats import MIN_SEEDS, Paired, Summary, paired, summarize

DASH = "—"
FAILED_MARK = "†"
STALE_MARK = "‡"  # a variant with results of older code, config schema or data (harness.identity)


# ------------------------------------------------------------------------------------------ model
@dataclass
class Column:
    """``kind``: ``text`` (a string), ``stat`` (a :class:`Summary`: mean ± CI, n) or ``num`` (a float).
    ``better``: ``max`` / ``min`` bolds the best value of the column; ``digits``: decimals shown."""

    key: str
    header: str
    kind: str = "text"
    better: str | None = None
    digits: int = 1
    signed: bool = False  # show "+" on positive numbers (differences)


@dataclass
class Cell:
    text: str = ""
    stat: Summary | None = None
    num: float | None = None
    bold: bool = False


@dataclass
class Table:
    name: str  # file stem, e.g. "table_main"
    caption: str
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    label: str = ""  # LaTeX \label
    details: list[str] = field(default_factory=list)  # Markdown-only lines after the notes (run ids, reasons)

    def mark_best(self) -> Table:
        """Bold the best value of each column that has ``better`` (ties at the shown precision too)."""
        for j, col in enumerate(self.columns):
            if col.better not in ("max", "min"):
                continue
            vals = [(i, _value(r[j])) for i, r in enumerate(self.rows)]
            vals = [(i, v) for i, v in vals if v is not None]
            if len(vals) < 2:
                continue
            best = max(v for _, v in vals) if col.better == "max" else min(v for _, v in vals)
            shown = f"{best:.{col.digits}f}"
            if all(f"{v:.{col.digits}f}" == shown for _, v in vals):
                continue  # a constant column has no best
            for i, v in vals:
                self.rows[i][j].bold = f"{v:.{col.digits}f}" == shown
        return self


def _value(c: Cell) -> float | None:
    if c.stat is not None:
        return c.stat.mean if c.stat.n > 0 and math.isfinite(c.stat.mean) else None
    if c.num is not None and math.isfinite(c.num):
        return c.num
    return None


# ---------------------------------------------------------------------------------------- writers
def _fmt(x: float, digits: int, signed: bool = False) -> str:
    s = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return "0.0" if s in ("-0.0", "+0.0") and not signed else s


def _cell_parts(c: Cell, col: Column) -> tuple[str, str, str]:
    """(main number, '± half' or '', '(n=k)' or '') as plain text; ('—', '', '') for no value."""
    if col.kind == "stat":
        s = c.stat
        if s is None or s.n == 0:
            return DASH, "", ""
        pm = f"± {_fmt(s.half, col.digits)}" if s.n >= 2 and math.isfinite(s.half) else ""
        few = f"(n={s.n})" if s.n < MIN_SEEDS else ""
        return _fmt(s.mean, col.digits, col.signed), pm, few
    if col.kind == "num":
        if c.num is None or not math.isfinite(c.num):
            return DASH, "", ""
        return f"{c.num:,.{col.digits}f}" if col.digits == 0 else _fmt(c.num, col.digits, col.signed), "", ""
    return c.text, "", ""


def to_markdown(t: Table) -> str:
    """GitHub Markdown: a caption line, the table, the notes. Best values in **bold**."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    head = "| " + " | ".join(esc(c.header) for c in t.columns) + " |"
    align = "|" + "|".join(":---" if c.kind == "text" else "---:" for c in t.columns) + "|"
    lines = [f"**{esc(t.caption)}**", "", head, align]
    for row in t.rows:
        cells = []
        for c, col in zip(row, t.columns):
            main, pm, few = _cell_parts(c, col)
            if c.bold and main != DASH:
                main = f"**{main}**"
            cells.append(esc(" ".join(p for p in (main, pm, few) if p)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = t.notes + t.details
    if notes:
        lines.append("")
        lines.extend(f"{n}  " if i < len(notes) - 1 else n for i, n in enumerate(notes))
    return "\n".join(lines) + "\n"


def _csv_num(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.4f}"


def to_csv(t: Table) -> str:
    """Machine-readable: a stat column becomes ``<key>_mean, <key>_ci95, <key>_n`` (display units)."""
    header: list[str] = []
    for col in t.columns:
        header += [f"{col.key}_mean", f"{col.key}_ci95", f"{col.key}_n"] if col.kind == "stat" else [col.key]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in t.rows:
        out: list[str] = []
        for c, col in zip(row, t.columns):
            if col.kind == "stat":
                s = c.stat
                if s is None or s.n == 0:
                    out += ["", "", "0"]
                else:
                    out += [_csv_num(s.mean), _csv_num(s.half), str(s.n)]
            elif col.kind == "num":
                out.append(_csv_num(c.num))
            else:
                out.append(c.text)
        w.writerow(out)
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "—": "--",
        "−": "$-$", "×": r"$\times$", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$",
        ">": r"$>$"}


def tex_escape(s: str) -> str:
    """Escape LaTeX specials and map the few non-ASCII marks the tables use."""
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    """A booktabs ``table`` float: \\toprule/\\midrule/\\bottomrule, best values \\textbf, notes below."""
    spec = "".join("l" if c.kind == "text" else "r" for c in t.columns)
    lines = [r"% generated by python -m harness.report; needs \usepackage{booktabs}",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{tex_escape(t.caption)}}}"]
    if t.label:
        lines.append(rf"\label{{{t.label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(tex_escape(c.header) for c in t.columns) + r" \\", r"\midrule"]
    for row in t.rows:
        cells = []
        for c, col in zip(row, t.columns):
            main, pm, few = _cell_parts(c, col)
            m = tex_escape(main)
            if main[:1] == "-" and main[1:2].isdigit():
                m = "$-$" + m[1:]  # a minus sign, not a hyphen
            if c.bold and main != DASH:
                m = rf"\textbf{{{m}}}"
            parts = [m]
            if pm:
                parts.append(r"{\scriptsize$\pm$" + tex_escape(pm[2:]) + "}")
            if few:
                parts.append(r"{\scriptsize " + tex_escape(few) + "}")
            cells.append(" ".join(parts))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(tex_escape(n) for n in t.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- registry
TableKind = Callable[[StudyData, dict[str, Any]], "Table | None"]
TABLES: dict[str, TableKind] = {}


def register_table(name: str) -> Callable[[TableKind], TableKind]:
    """Decorator: make ``fn(study, options) -> Table | None`` available as table kind ``name``."""
    def deco(fn: TableKind) -> TableKind:
        TABLES[name] = fn
        return fn
    return deco


def default_tables(plugins: list[str]) -> list[str]:
    """The table kinds a study gets without ``report.tables``: the core ones and those its own
    ``report.plugins`` register, so a plugin loaded for one study (``--paper`` builds every study in one
    process) never adds tables to another."""
    return [k for k, fn in TABLES.items() if fn.__module__ == __name__ or fn.__module__ in plugins]


def runs_text(v: Variant) -> str:
    """``3/3`` or ``1/3 †1 failed, 1 missing``: how many of the variant's runs count, and why not all."""
    c = v.counts()
    parts = []
    if c.get("failed"):
        parts.append(f"{FAILED_MARK}{c['failed']} failed")
    if c.get("missing"):
        parts.append(f"{c['missing']} missing")
    if c.get("running"):
        parts.append(f"{c['running']} running")
    n_stale = sum(1 for r in v.runs if r.status == "done" and r.stale)
    if n_stale:
        parts.append(f"{STALE_MARK}{n_stale} stale")
    return f"{c.get('done', 0)}/{len(v.runs)}" + (" " + ", ".join(parts) if parts else "")


def stale_note(study: StudyData) -> list[str]:
    """One line when some results are stale: they are shown, marked, never silently passed off as current."""
    stale = study.stale_runs()
    if not stale:
        return []
    why = stale[0].stale or ""
    return [f"{STALE_MARK} {len(stale)} of {len(study.runs)} runs are stale: recorded by older code, config schema "
            f"or data ({why}{'; ...' if len({r.stale for r in stale}) > 1 else ''}). Their numbers are shown "
            "but are not what the current code computes; rerun them with `python -m harness.sweep "
            f"{study.spec_path or '<study>.yaml'} --rerun-stale`."]


def _axis_cells(study: StudyData, v: Variant, axes: list[str]) -> list[Cell]:
    return [Cell(text=fmt_value(v.values.get(a))) for a in axes]


def _suite_title(study: StudyData, g: str) -> str:
    """Column title of a suite: its name, with its own metric when the columns differ in metric."""
    if not study.mixed_metrics:
        return style.suite_name(g)
    return f"{style.suite_name(g)} ({style.metric_title(study.metric_of(g))})"


def _stat_note(study: StudyData) -> str:
    if study.mixed_metrics:
        unit = "each column in its benchmark's own metric, fractions in %"
    else:
        unit = "%" if study.scale() == 100 else study.metric
    return (f"Mean ± 95% CI half-width over seeds (Student t, {unit}); (n=k): fewer than {MIN_SEEDS} seeds "
            "(one seed: no interval). Best value per column in bold.")


PROTOCOL_TEXT = {"lmm": "LMM (compressor -> projector -> LLM, answer-letter likelihood)",
                 "probe": "probe (compressor -> fixed read-out, cross-entropy over the fixed options; harness/probe)"}


def protocol_note(study: StudyData) -> str:
    """Which protocol made the numbers (every table says it)."""
    p = study.protocols() or {"lmm": 0}
    return "Protocol: " + "; ".join(PROTOCOL_TEXT.get(k, k) + (f" ({n} runs)" if len(p) > 1 else "")
                                   for k, n in sorted(p.items())) + "."


def _failure_notes(study: StudyData, variants: list[Variant]) -> tuple[list[str], list[str]]:
    """(one summary line for every format, per-run lines with reasons for Markdown)."""
    bad = [r for v in variants for r in v.runs if r.status != "done"]
    if not bad:
        return [], []
    c = study.status_counts()
    head = (f"{FAILED_MARK} {sum(1 for r in bad if r.status == 'failed')} failed, "
            f"{c.get('missing', 0)} missing, {c.get('running', 0)} running of {len(study.runs)} runs: "
            "excluded from the means (never counted as zero).")
    lines = []
    for r in bad[:12]:
        why = (r.reason or "").strip().splitlines()[0][:90] if r.reason else ""
        lines.append(f"{r.status} {r.run_id} (seed {r.seed})" + (f": {why}" if why else ""))
    if len(bad) > 12:
        lines.append(f"... and {len(bad) - 12} more (see index.md)")
    return [head], lines


@register_table("main")
def main_table(study: StudyData, options: dict[str, Any]) -> Table | None:
    """Variants x suites (+ mean over suites, costs, seeds, run status)."""
    axes = list(study.axes)
    cols = [Column(a, a) for a in axes]
    cols += [Column(g, _suite_title(study, g), "stat", better="max") for g in study.groups]
    with_mean = len(study.groups) > 1 and study.overall is None and not study.mixed_metrics
    if with_mean:
        cols.append(Column("mean", "Mean", "stat", better="max"))
    # costs that differ between variants get a column; a constant one is stated once in the notes
    costs, constant = [], []
    for k in study.costs:
        vals = {round(study.cost_summary(v, k).mean, 6) for v in study.variants if study.cost_summary(v, k).n}
        if vals:
            (costs if len(vals) > 1 else constant).append((k, vals))
    costs_keys = [k for k, _ in costs]
    for k in costs_keys:
        cols.append(Column(k.removeprefix("x."), style.COST_SHORT.get(k, k), "num", better="min",
                           digits=0 if "tokens" in k else 1))
    cols += [Column("seeds", "Seeds"), Column("runs", "Runs")]
    rows = []
    for v in study.variants:
        row = _axis_cells(study, v, axes)
        row += [Cell(stat=study.summary(v, g)) for g in study.groups]
        if with_mean:
            row.append(Cell(stat=study.score_summary(v)))
        for k in costs_keys:
            s = study.cost_summary(v, k)
            row.append(Cell(num=s.mean if s.n else None))
        n_seeds = len({r.seed for r in v.runs if r.status == "done"})
        row += [Cell(text=str(n_seeds)), Cell(text=runs_text(v))]
        rows.append(row)
    what = "each benchmark's own metric" if study.mixed_metrics else style.metric_title(study.metric)
    caption = f"{study.name}: {what} per suite" + (f" ({study.description})" if study.description else "")
    notes = [_stat_note(study), protocol_note(study)]
    failed = sum(study.n_failed.values())
    if failed:
        notes.append(f"{failed} samples of {sum(1 for k in study.n_failed.values() if k)} runs could not be read "
                     "(unreadable video) and count as wrong answers (samples_failed in summary.csv).")
    if not study.variants:
        notes.insert(0, f"The study index {study.index_path.name} lists no runs yet.")
    if with_mean:
        notes.append("Mean: per seed, the mean over the suites, then mean ± CI over seeds.")
    if costs_keys:
        notes.append("Costs: mean over seeds (lower is better).")
        devices = study.devices()
        if len(devices) > 1:
            notes.append("Costs come from different devices: " + ", ".join(
                f"{d} ({n} runs)" for d, n in sorted(devices.items())) + "; compare them within one device only.")
    if constant:
        notes.append("Same for every variant: " + "; ".join(
            f"{style.COST_SHORT.get(k, k)} {next(iter(vals)):g}" for k, vals in constant) + ".")
    head, details = _failure_notes(study, study.variants)
    return Table("table_main", caption, cols, rows, stale_note(study) + notes + head, f"tab:{study.name}-main",
                 details).mark_best()


@register_table("tasks")
def tasks_table(study: StudyData, options: dict[str, Any]) -> Table | None:
    """Variants x task families: the numbers behind the per-task heatmap."""
    if not study.tasks:
        return None
    axes = list(study.axes)
    cols = [Column(a, a) for a in axes]
    cols += [Column(t, style.suite_name(t), "stat", better="max") for t in study.tasks]
    rows = [_axis_cells(study, v, axes) + [Cell(stat=study.summary(v, t)) for t in study.tasks]
            for v in study.variants]
    caption = f"{study.name}: {style.metric_title(study.metric)} per task family"
    notes = [_stat_note(study), protocol_note(study), *_failure_notes(study, study.variants)[0]]
    return Table("table_tasks", caption, cols, rows, notes, f"tab:{study.name}-tasks").mark_best()


def x_value(study: StudyData, v: Any, where: str) -> str:
    """``v`` as the report compares values of the x axis; a ReportError naming ``where`` if it is none."""
    known = [fmt_value(k) for k in study.axis_order.get(study.x or "", [])]
    if fmt_value(v) not in known:
        raise ReportError(f"{study.index_path}: {where}: {v!r} is not a value of axis {study.x!r} "
                          f"(values: {', '.join(known)})")
    return fmt_value(v)


def compare_pairs(study: StudyData, options: dict[str, Any]) -> list[tuple[str, str]]:
    """``report.compare`` plus ``options['compare']``, validated against the x axis's values."""
    raw = list(study.report.get("compare") or []) + list(options.get("compare") or [])
    pairs: list[tuple[str, str]] = []
    for i, p in enumerate(raw):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ReportError(f"{study.index_path}: report.compare[{i}] must be a pair [a, b], got {p!r}")
        pair = (x_value(study, p[0], f"report.compare[{i}]"), x_value(study, p[1], f"report.compare[{i}]"))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def matched_variants(study: StudyData, a: str, b: str) -> Iterator[tuple[dict[str, Any], Variant, Variant]]:
    """The variants with x = ``a`` and x = ``b`` at the same setting of the other axes: (setting, va, vb)."""
    ctx_axes = study.series_axes(study.x)
    for va in study.find_variants(a):
        ctx = {k: va.values.get(k) for k in ctx_axes}
        vb = next((v for v in study.find_variants(b)
                   if all(repr(v.values.get(k)) == repr(ctx[k]) for k in ctx_axes)), None)
        if vb is not None:
            yield ctx, va, vb


def paired_scores(study: StudyData, a: str, b: str) -> Iterator[tuple[str, str, Paired]]:
    """``a - b`` on the study's score (overall, or the mean over suites) per setting of the other axes:
    (the setting as ``axis=value, ...``, the score's name, the paired difference)."""
    for ctx, va, vb in matched_variants(study, a, b):
        where = ", ".join(f"{k}={fmt_value(v)}" for k, v in ctx.items())
        yield where, study.score_name, paired(study.score_values(va), study.score_values(vb))


@register_table("compare")
def compare_table(study: StudyData, options: dict[str, Any]) -> Table | None:
    """Paired differences a - b (percentage points) per suite, within each setting of the other axes."""
    pairs = compare_pairs(study, options)
    if not pairs or study.x is None:
        return None
    x = study.x
    ctx_axes = study.series_axes(x)
    cols = [Column("a", "A"), Column("b", "B")] + [Column(a, a) for a in ctx_axes]
    cols += [Column("suite", "Suite"), Column("delta", "Δ (A − B)", "stat", signed=True),
             Column("p", "p", "num", digits=3), Column("seeds", "Paired seeds")]
    rows = []
    scale = study.scale()
    for a, b in pairs:
        for ctx, va, vb in matched_variants(study, a, b):
            cols_scores = [(g, va.seed_values(g, study.metric), vb.seed_values(g, study.metric))
                           for g in study.groups]
            if len(study.groups) > 1 and study.overall is None:
                cols_scores.append(("mean", study.score_values(va), study.score_values(vb)))
            for g, sa, sb in cols_scores:
                pr = paired(sa, sb)
                seeds = ",".join(str(s) for s in pr.seeds) or DASH
                if pr.only_a or pr.only_b:
                    seeds += f" (unpaired: {len(pr.only_a) + len(pr.only_b)})"
                rows.append([Cell(text=a), Cell(text=b), *[Cell(text=fmt_value(ctx[k])) for k in ctx_axes],
                             Cell(text="Mean" if g == "mean" else style.suite_name(g)),
                             Cell(stat=pr.diff.scaled(scale)),
                             Cell(num=pr.p_value if math.isfinite(pr.p_value) else None),
                             Cell(text=seeds)])
    unit = "percentage points" if scale == 100 else study.metric
    notes = [f"Δ: per-seed difference A − B over the seeds both have ({unit}), mean ± 95% CI (Student t); "
             f"p: two-sided paired t-test. (n=k): fewer than {MIN_SEEDS} pairs.", protocol_note(study)]
    caption = f"{study.name}: paired comparisons on {x}"
    return Table("table_compare", caption, cols, rows, notes, f"tab:{study.name}-compare")


def summary_csv(study: StudyData) -> str:
    """Tidy numbers of every (variant, task, metric) in stored units (fractions), for checking by hand."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    axes = list(study.axes)
    w.writerow(["study", *[f"v.{a}" for a in axes], "task", "metric", "n", "mean", "sd", "ci95_lo",
                "ci95_hi", "seeds", "runs", "failed", "missing", "running", "samples_failed"])
    for v in study.variants:
        c = v.counts()
        for t in [*study.groups, *study.tasks]:
            for m in study.metrics:
                vals = v.seed_values(t, m)
                s = summarize(vals.values())
                w.writerow([study.name, *[fmt_value(v.values.get(a)) for a in axes], t, m, s.n,
                            "" if s.n == 0 else f"{s.mean:.6f}", "" if s.n < 2 else f"{s.sd:.6f}",
                            "" if s.n < 2 else f"{s.lo:.6f}", "" if s.n < 2 else f"{s.hi:.6f}",
                            ";".join(str(k) for k in sorted(vals)), len(v.runs), c.get("failed", 0),
                            c.get("missing", 0), c.get("running", 0),
                            sum(r.failed_samples.get(t, 0) for r in v.runs if r.status == "done")])
    return buf.getvalue()
