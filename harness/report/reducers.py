"""Trained compressors against training-free token reducers at matched budgets; a plugin (``report.plugins``).

A matched-budget study sweeps ``model.visual_tokens`` (its axis label, ``report.budget_axis``, default
``budget``) across compressors (``report.compressor_axis``, default ``compressor``). Each run records what
reached the LLM, measured per test video (``tokens.llm_visual`` mean, ``_min`` / ``_max``), and whether its
compressor is training-free (``extra.training_free``, from the registry). This module adds:

* table ``matched_budget``: per budget and compressor, its kind, the score (mean ± 95 % CI over seeds), the
  measured tokens (mean [min, max] over runs and videos) against the budget, and the batch-1 compressor
  time per video; a note says whether every variant met its budget exactly;
* figure ``budget_pareto``: score against measured LLM tokens and against compressor time per video, one
  line per compressor across budgets (solid: trained, dashed: training-free), the Pareto front dashed grey.

The paired verdicts, trained against training-free at each budget, are the core ``report.compare`` pairs
(x = the compressor axis, paired at each budget) and land in ``findings.md``.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.lines import Line2D

from harness.report import style
from harness.report.data import ReportError, StudyData, Variant, fmt_value
from harness.report.figures import (
    FigureResult,
    SkipFigure,
    _grid,
    _log_axis,
    pareto_front,
    register_figure,
)
from harness.report.tables import Cell, Column, Table, protocol_note, register_table

DASH = "–"


def axes_of(study: StudyData) -> tuple[str, str]:
    comp = str(study.report.get("compressor_axis") or "compressor")
    budget = str(study.report.get("budget_axis") or "budget")
    for what, a in (("compressor_axis", comp), ("budget_axis", budget)):
        if a not in study.axes:
            raise ReportError(f"{study.index_path}: report.{what} = {a!r} is not an axis (axes: "
                              f"{', '.join(study.axes)})")
    return comp, budget


def kind(v: Variant) -> str:
    """``training-free`` / ``trained`` from the runs' records (``extra.training_free``)."""
    flags = {r.facts.get("training_free") for r in v.runs if "training_free" in r.facts}
    if flags == {True}:
        return "training-free"
    if flags == {False}:
        return "trained"
    return "?"


def _tokens(v: Variant) -> tuple[float | None, float | None, float | None]:
    """(mean, min, max) of the measured tokens over the variant's done runs."""
    means = [r.costs["llm_visual_tokens"] for r in v.runs if "llm_visual_tokens" in r.costs]
    lo = [r.costs.get("llm_visual_min", r.costs.get("llm_visual_tokens")) for r in v.runs
          if "llm_visual_tokens" in r.costs]
    hi = [r.costs.get("llm_visual_max", r.costs.get("llm_visual_tokens")) for r in v.runs
          if "llm_visual_tokens" in r.costs]
    if not means:
        return None, None, None
    return sum(means) / len(means), min(x for x in lo if x is not None), max(x for x in hi if x is not None)


def _budget_of(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register_table("matched_budget")
def matched_budget(study: StudyData, options: dict[str, Any]) -> Table | None:
    """Per budget and compressor: kind, score, measured tokens against the budget, compressor time."""
    if study.report.get("budget_axis") is None and "budget" not in study.axes:
        return None
    comp, budget = axes_of(study)
    cols = [Column("budget", "Budget"), Column("compressor", "Compressor"), Column("kind", "Kind"),
            Column("mode", "Run"),
            Column("score", f"{style.metric_title(study.metric)} ({study.score_name})", "stat", better="max"),
            Column("tokens", "LLM tokens per video, measured: mean [min, max]"),
            Column("ms", "Compressor ms / video", "num", digits=2), Column("runs", "Runs")]
    rows, missed = [], []
    for b in study.axis_order.get(budget, []):
        group = [v for v in study.variants if repr(v.values.get(budget)) == repr(b)]
        order = {repr(c): i for i, c in enumerate(study.axis_order.get(comp, []))}
        group.sort(key=lambda v: (kind(v) != "trained", order.get(repr(v.values.get(comp)), 0)))
        for v in group:
            mean, lo, hi = _tokens(v)
            tok = DASH if mean is None else f"{mean:g} [{lo:g}, {hi:g}]"
            want = _budget_of(b)
            if mean is not None and want is not None and not (lo == hi == want):
                missed.append(f"{fmt_value(v.values.get(comp))} at {fmt_value(b)} ({tok})")
            ms = study.cost_summary(v, "x.compressor_ms")
            done = sum(1 for r in v.runs if r.status == "done")
            parents = {str(r.facts["parent_run"]) for r in v.runs if r.facts.get("parent_run")}
            mode = ((f"evaluation-only over {next(iter(parents))}" if len(parents) == 1
                     else f"evaluation-only over {len(parents)} parent runs") if parents
                    else "rule in place, maps trained" if kind(v) == "training-free" else "trained")
            rows.append([Cell(text=fmt_value(b)), Cell(text=fmt_value(v.values.get(comp))), Cell(text=kind(v)),
                         Cell(text=mode),
                         Cell(stat=study.score_summary(v)),
                         Cell(text=tok), Cell(num=ms.mean if ms.n else None),
                         Cell(text=f"{done}/{len(v.runs)}")])
    if not rows:
        return None
    notes = [("Every variant passed exactly its budget to the LLM, on every test video (measured)." if not missed
              else "Not exactly at budget (parent runs pass every token; a time-axis aggregator keeps a "
                   "data-dependent count): " + "; ".join(missed) + "."),
             "Trained: the compressor learns (with the read-out or LLM); training-free: a published reduction "
             "rule on the frozen encoder features, whose token-wise maps train with the rest. "
             "Compressor ms: batch-1 forward on one test video.", protocol_note(study)]
    return Table("table_matched_budget", f"{study.name}: trained compressors and training-free reducers at "
                 "matched LLM token budgets", cols, rows, notes, f"tab:{study.name}-budget")


def _line_style(k: str) -> str:
    return "-" if k == "trained" else "--"


@register_figure("budget_pareto")
def budget_pareto(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Score vs measured LLM tokens and vs compressor time per video; a line per compressor over budgets."""
    comp, _budget = axes_of(study)
    costs = [c for c in ("llm_visual_tokens", "x.compressor_ms") if c in study.costs]
    if not costs:
        raise SkipFigure("the runs record neither LLM tokens nor compressor time")
    width = style.COLUMN_WIDTH_IN if len(costs) == 1 else style.PAGE_WIDTH_IN
    fig, axs = _grid(len(costs), width, 2.5)
    names = list(study.axis_order.get(comp, []))
    handles: dict[str, Line2D] = {}
    for ax, c in zip(axs, costs):
        pts = []
        for i, name in enumerate(names):
            vs = [v for v in study.variants if repr(v.values.get(comp)) == repr(name)]
            line = []
            for v in vs:
                s, cs = study.score_summary(v), study.cost_summary(v, c)
                if s.n and cs.n:
                    line.append((cs.mean, s.mean, s.half if math.isfinite(s.half) else 0.0))
            if not line:
                continue
            line.sort()
            k = kind(vs[0])
            col = style.color(i)
            mk = "o" if k == "trained" else "s"
            ax.errorbar([p[0] for p in line], [p[1] for p in line], yerr=[p[2] for p in line], color=col,
                        linestyle=_line_style(k), marker=mk, markersize=3, linewidth=0.9, capsize=1.5,
                        elinewidth=0.6, zorder=3)
            handles.setdefault(fmt_value(name), Line2D([], [], color=col, linestyle=_line_style(k), marker=mk,
                                                       markersize=3))
            pts += [(p[0], p[1]) for p in line]
        if pts:
            front = pareto_front(pts)
            ax.step([pts[j][0] for j in front], [pts[j][1] for j in front], where="post", color="0.6",
                    linestyle=":", linewidth=0.8, zorder=1)
            xs = [p[0] for p in pts]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                _log_axis(ax)
        chance = study.chance()  # display units
        if chance is not None:
            ax.axhline(chance, color="0.75", linewidth=0.6, zorder=0)
        ax.set_xlabel(style.axis_title(c) + (" (measured)" if c == "llm_visual_tokens" else " per video"))
        ax.grid(True, axis="both")
    axs[0].set_ylabel(style.metric_title(study.metric))
    if handles:
        ncol = min(len(handles), 4)
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, 0.0),
                   handletextpad=0.3, columnspacing=1.0)
        fig.tight_layout(rect=(0, min(0.07 * math.ceil(len(handles) / ncol) + 0.03, 0.5), 1, 1))
    cap = (f"{study.name}: {style.metric_title(study.metric)} ({study.score_name}) against the LLM tokens each "
           "video passes (measured) and the compressor's time per video; solid circles: trained compressors, "
           "dashed squares: training-free reducers; dotted grey: the Pareto front; grey line: chance. "
           "Bars: 95 % CI over seeds.")
    return FigureResult(fig, cap)
