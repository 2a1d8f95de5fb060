"""Figures from a study: a registry of figure kinds, each ``(study, spec) -> FigureResult``.

Built-in kinds (``report.figures`` in the study picks them; entries are a name or ``{kind: name, ...}``):

``grouped_bars``      accuracy per x value (e.g. block type), one bar per suite (long vs dense), 95% CI
                      whiskers; a panel per setting of the other axes.
``lines``             accuracy vs a numeric axis (token budget, query period, frames): a line per setting
                      of the other axes, CI whiskers, a panel per suite.
``pareto``            accuracy vs cost (LLM tokens, time to first token ...), one point per variant, the
                      Pareto front drawn, dominated variants hollow; a panel per cost.
``per_task_heatmap``  variants x task families (and suites), mean accuracy written in each cell.

Without ``report.figures`` the choice follows the x axis: a numeric one (budget, period) gets ``lines``,
a categorical one (block, pooling) ``grouped_bars``; ``per_task_heatmap`` when the runs report task
families, ``pareto`` when they report a cost. A new kind is one decorated function::

    from harness.report.figures import register_figure, FigureResult, SkipFigure
    @register_figure("frames_vs_latency")
    def _fvl(study, spec): ...   # return FigureResult(fig, caption) or raise SkipFigure(reason)

Kinds that take an ``x`` get the file stem ``fig_<kind>_<x>``, the others ``fig_<kind>``; ``name:`` in
the entry overrides it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.report import style  # noqa: E402
from harness.report.data import ReportError, StudyData, Variant, fmt_value  # noqa: E402
from harness.report.stats import MIN_SEEDS, Summary  # noqa: E402


@dataclass
class FigureResult:
    fig: Figure
    caption: str


class SkipFigure(Exception):
    """The figure does not apply to this study (the reason is reported, nothing is written)."""


FigureKind = Callable[[StudyData, dict[str, Any]], FigureResult]
FIGURES: dict[str, FigureKind] = {}
TAKES_X = {"grouped_bars", "lines"}


def register_figure(name: str, takes_x: bool = False) -> Callable[[FigureKind], FigureKind]:
    """Decorator: make ``fn(study, spec) -> FigureResult`` available as figure kind ``name``."""
    def deco(fn: FigureKind) -> FigureKind:
        FIGURES[name] = fn
        if takes_x:
            TAKES_X.add(name)
        return fn
    return deco


# ------------------------------------------------------------------------------------ choosing
def default_figures(study: StudyData) -> list[dict[str, Any]]:
    """Figures a reader expects for this study's axes (see the module docstring)."""
    out: list[dict[str, Any]] = []
    x = study.x
    if x is not None:
        if study.numeric(x) and len(study.axis_order[x]) >= 2:
            out.append({"kind": "lines", "x": x})
        else:
            out.append({"kind": "grouped_bars", "x": x})
    if study.tasks:
        out.append({"kind": "per_task_heatmap"})
    if study.costs:
        out.append({"kind": "pareto"})
    return out


def figure_specs(study: StudyData) -> list[dict[str, Any]]:
    """``report.figures`` as ``{kind, ...}`` dicts (validated), or :func:`default_figures`."""
    raw = study.report.get("figures")
    if raw is None:
        return default_figures(study)
    if not isinstance(raw, list):
        raise ReportError(f"{study.index_path}: report.figures must be a list, got {type(raw).__name__}")
    specs = []
    for i, entry in enumerate(raw):
        spec = {"kind": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, dict) else None
        if spec is None or not isinstance(spec.get("kind"), str):
            raise ReportError(f"{study.index_path}: report.figures[{i}] must be a name or "
                              f"{{kind: name, ...}}, got {entry!r}")
        if spec["kind"] not in FIGURES:
            raise ReportError(f"{study.index_path}: report.figures[{i}]: unknown figure kind "
                              f"{spec['kind']!r} (known: {', '.join(sorted(FIGURES))})")
        if "x" in spec and spec["x"] not in study.axes:
            raise ReportError(f"{study.index_path}: report.figures[{i}].x = {spec['x']!r} is not an axis "
                              f"(axes: {', '.join(study.axes)})")
        specs.append(spec)
    return specs


def figure_stem(study: StudyData, spec: dict[str, Any]) -> str:
    if spec.get("name"):
        return str(spec["name"])
    if spec["kind"] in TAKES_X and (spec.get("x") or study.x):
        return f"fig_{spec['kind']}_{spec.get('x') or study.x}"
    return f"fig_{spec['kind']}"


# -------------------------------------------------------------------------------------- helpers
def short_label(study: StudyData, v: Variant, axes: list[str] | None = None) -> str:
    """``bi_ssm`` for one axis; ``bi_ssm, period=8`` (x value first, then ``axis=value``) otherwise."""
    axes = list(study.axes) if axes is None else axes
    if not axes:
        return v.label
    parts = [fmt_value(v.values.get(axes[0]))] + [f"{a}={fmt_value(v.values.get(a))}" for a in axes[1:]]
    return ", ".join(parts)


def wrap_label(text: str, width: int = 36) -> str:
    """``a=1, b=2, ...`` broken after commas into lines of at most ~``width`` characters."""
    lines: list[str] = []
    for part in text.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _setting_key(v: Variant, axes: list[str]) -> tuple[str, ...]:
    return tuple(repr(v.values.get(a)) for a in axes)


def _settings(study: StudyData, axes: list[str]) -> list[dict[str, Any]]:
    """The distinct settings of ``axes`` in the study's variant order."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for v in study.variants:
        out.setdefault(_setting_key(v, axes), {a: v.values.get(a) for a in axes})
    return list(out.values())


def _setting_text(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in s.items())


def _chance_line(study: StudyData, ax: Any) -> None:
    """A dotted line at chance accuracy when the runs report it (``extra.chance``)."""
    c = study.chance()
    if c is not None:
        ax.axhline(c, color="0.35", linestyle=":", linewidth=0.9, zorder=0.8, label="chance")


def _suites(study: StudyData, spec: dict[str, Any]) -> list[str]:
    """``spec.suites``, else the suites without the overall score (it repeats them) when there are 2+."""
    if spec.get("suites"):
        return list(spec["suites"])
    parts = [g for g in study.groups if g != study.overall]
    return parts if len(parts) >= 2 else list(study.groups)


def _legend_items(ax: Any) -> tuple[list[Any], list[str]]:
    """Legend handles and labels of ``ax`` with the chance line last."""
    h, lab = ax.get_legend_handles_labels()
    order = sorted(range(len(lab)), key=lambda i: lab[i] == "chance")
    return [h[i] for i in order], [lab[i] for i in order]


def _err(s: Summary) -> float:
    return s.half if s.n >= 2 and math.isfinite(s.half) else 0.0


def _grid(n: int, width: float, height: float, sharey: bool = True) -> tuple[Figure, list[Any]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(width, height * nrows), sharey=sharey, squeeze=False)
    flat = list(axs.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _log_axis(ax: Any) -> None:
    """Log x axis with plain tick labels (20, 50, 100, 200 ...) and no crowded minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _few_note(study: StudyData) -> str:
    return (f"Whiskers: 95% CI over seeds (Student t); n=k marks fewer than {MIN_SEEDS} seeds, "
            "failed or missing runs are left out.")


# ---------------------------------------------------------------------------------------- kinds
@register_figure("grouped_bars", takes_x=True)
def grouped_bars(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Bars: x values (e.g. block types) on the x axis, one bar per suite, CI whiskers."""
    x = spec.get("x") or study.x
    if x is None:
        raise SkipFigure("the study has no axes")
    suites = _suites(study, spec)
    if not suites:
        raise SkipFigure("the runs report no scores")
    scale = study.scale()
    fixed = study.determined_by(x)
    panels = _settings(study, study.series_axes(x))
    xs = study.axis_order[x]
    n_bars = len(xs) * len(suites)
    width = style.COLUMN_WIDTH_IN if len(panels) == 1 and n_bars <= 12 else style.PAGE_WIDTH_IN
    fig, axs = _grid(len(panels), width, 2.1)
    bar_w = 0.8 / len(suites)
    top = 0.0
    for ax, setting in zip(axs, panels):
        for j, g in enumerate(suites):
            for i, xv in enumerate(xs):
                v = next((u for u in study.variants if repr(u.values.get(x)) == repr(xv)
                          and all(repr(u.values.get(k)) == repr(val) for k, val in setting.items())), None)
                pos = i + (j - (len(suites) - 1) / 2) * bar_w
                s = study.summary(v, g) if v is not None else Summary(0, math.nan, math.nan, math.nan)
                if s.n == 0:
                    ax.text(pos, 0, "×", ha="center", va="bottom", fontsize=7, color="0.4")
                    continue
                ax.bar(pos, s.mean, bar_w * 0.92, color=style.color(j), hatch=style.hatch(j),
                       edgecolor="white", linewidth=0.4, label=style.suite_name(g) if i == 0 else None)
                e = _err(s)
                if e > 0:
                    ax.errorbar(pos, s.mean, yerr=e, fmt="none", ecolor="0.15", elinewidth=0.7, capsize=1.5)
                top = max(top, s.mean + e)
                if s.n < MIN_SEEDS:  # inside the bar's foot: never collides with whiskers or titles
                    ax.annotate(f"n={s.n}", (pos, 0), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=5, color="0.1",
                                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9})
        _chance_line(study, ax)
        ticks = [fmt_value(xv) + "".join(f"\n{a}={fmt_value(_fixed_value(study, x, xv, a))}" for a in fixed)
                 for xv in xs]
        ax.set_xticks(range(len(xs)), ticks, rotation=20 if max(len(str(t)) for t in xs) > 8 else 0)
        ax.tick_params(axis="x", length=0)
        ax.set_xlabel(style.axis_title(x))
        if setting:
            ax.set_title(_setting_text(setting))
    axs[0].set_ylabel(style.metric_title(study.metric))
    if top > 0:
        for ax in axs:
            ax.set_ylim(0, min(top * 1.08, 100.0) if scale == 100 else top * 1.08)
    handles, labels = _legend_items(axs[0])
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0),
                   title=None)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
    else:
        fig.tight_layout()
    cap = (f"{study.name}: {style.metric_title(study.metric)} per {x} on "
           f"{' vs '.join(style.suite_name(g) for g in suites)}. {_few_note(study)}")
    return FigureResult(fig, cap)


def _fixed_value(study: StudyData, x: str, xv: Any, a: str) -> Any:
    v = next((u for u in study.variants if repr(u.values.get(x)) == repr(xv)), None)
    return v.values.get(a) if v else None


@register_figure("lines", takes_x=True)
def lines(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Accuracy vs a numeric axis, a line per setting of the other axes, a panel per suite."""
    x = spec.get("x") or study.x
    if x is None or not study.numeric(x):
        raise SkipFigure(f"axis {x!r} is not numeric")
    suites = _suites(study, spec)
    if not suites:
        raise SkipFigure("the runs report no scores")
    series_axes = study.series_axes(x)
    series = _settings(study, series_axes)
    xs = [float(v) for v in study.axis_order[x]]
    log2 = min(xs) > 0 and max(xs) / min(xs) >= 8
    span = (max(xs) - min(xs)) or 1.0

    def dodge(xx: float, k: int) -> float:
        """Shift series k sideways a little so that whiskers at the same x do not hide each other."""
        d = (k - (len(series) - 1) / 2) * 0.012
        return xx * 2 ** (d * math.log2(max(xs) / min(xs))) if log2 else xx + d * span

    width = style.COLUMN_WIDTH_IN if len(suites) == 1 else style.PAGE_WIDTH_IN
    fig, axs = _grid(len(suites), width, 2.2)
    for ax, g in zip(axs, suites):
        for k, setting in enumerate(series):
            pts = []
            for v in study.variants:
                if all(repr(v.values.get(a)) == repr(val) for a, val in setting.items()):
                    s = study.summary(v, g)
                    if s.n:
                        pts.append((float(v.values[x]), s))
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            px = [dodge(p[0], k) for p in pts]
            py = [p[1].mean for p in pts]
            pe = [_err(p[1]) for p in pts]
            name = ", ".join(fmt_value(val) for val in setting.values()) or study.metric
            ax.errorbar(px, py, yerr=pe, color=style.color(k), marker=style.marker(k), label=name,
                        capsize=2, elinewidth=0.7, markeredgecolor="white", markeredgewidth=0.4)
            for xx, (_, s) in zip(px, pts):
                if s.n < MIN_SEEDS:
                    ax.annotate(f"n={s.n}", (xx, s.mean), textcoords="offset points", xytext=(0, 4),
                                ha="center", fontsize=5, color="0.3")
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
        _chance_line(study, ax)
        ax.set_xlabel(style.axis_title(x))
        ax.set_title(style.suite_name(g))
        ax.grid(True, axis="both")
    axs[0].set_ylabel(style.metric_title(study.metric))
    handles, labels = _legend_items(axs[0])
    if len(labels) > 1 or series_axes:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 1.0),
                   title=", ".join(series_axes) or None)
        fig.tight_layout(rect=(0, 0, 1, 0.86 if len(labels) <= 4 else 0.78))
    else:
        fig.tight_layout()
    cap = f"{study.name}: {style.metric_title(study.metric)} vs {x}. {_few_note(study)}"
    return FigureResult(fig, cap)


@register_figure("per_task_heatmap")
def per_task_heatmap(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Variants (rows) x task families then suites (columns), the mean written in each cell."""
    cols = list(spec.get("tasks") or study.tasks) + list(study.groups)
    if not cols or not study.variants:
        raise SkipFigure("no per-task scores")
    n_tasks = len(cols) - len(study.groups)
    data = np.full((len(study.variants), len(cols)), np.nan)
    few = np.zeros(data.shape, dtype=bool)
    for i, v in enumerate(study.variants):
        for j, t in enumerate(cols):
            s = study.summary(v, t)
            if s.n:
                data[i, j] = s.mean
                few[i, j] = s.n < MIN_SEEDS
    # many-axis variants (zip studies) get their row label over several lines, so the cells keep their width
    labels = [wrap_label(short_label(study, v)) for v in study.variants]
    lines = max(lab.count("\n") + 1 for lab in labels)
    chars = max(len(ln) for lab in labels for ln in lab.split("\n"))
    width = min(style.PAGE_WIDTH_IN, 1.2 + 0.42 * len(cols) + 0.05 * chars)
    height = 0.9 + (0.24 + 0.13 * (lines - 1)) * len(study.variants)
    fig, ax = plt.subplots(figsize=(max(width, style.COLUMN_WIDTH_IN), height))
    finite = data[np.isfinite(data)]
    lo = math.floor(finite.min() / 10) * 10 if finite.size else 0.0
    hi = math.ceil(finite.max() / 10) * 10 if finite.size else 100.0
    if hi <= lo:
        hi = lo + 10
    cmap = matplotlib.colormaps[style.HEATMAP_CMAP].with_extremes(bad="0.9")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi, aspect="auto",
                   interpolation="nearest")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            val = data[i, j]
            if not np.isfinite(val):
                ax.text(j, i, "–", ha="center", va="center", fontsize=6, color="0.35")
                continue
            r, g, b, _ = cmap((val - lo) / (hi - lo))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, f"{val:.0f}" + ("*" if few[i, j] else ""), ha="center", va="center", fontsize=6,
                    color="white" if dark else "black")
    if 0 < n_tasks < len(cols):
        ax.axvline(n_tasks - 0.5, color="white", linewidth=2)
    ax.set_xticks(range(len(cols)), [style.suite_name(c) for c in cols], rotation=40, ha="right")
    ax.set_yticks(range(len(study.variants)), labels)
    ax.tick_params(length=0)
    ax.grid(False)
    for sp in ax.spines.values():
        sp.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(style.metric_title(study.metric))
    cb.outline.set_linewidth(0.4)
    fig.tight_layout()
    cap = (f"{study.name}: {style.metric_title(study.metric)} per task family (left) and suite (right), "
           f"mean over seeds; * fewer than {MIN_SEEDS} seeds, – no finished run.")
    return FigureResult(fig, cap)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (lower cost, higher score), by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _varying(study: StudyData, key: str) -> bool:
    vals = {round(study.cost_summary(v, key).mean, 9) for v in study.variants if study.cost_summary(v, key).n}
    return len(vals) > 1


@register_figure("pareto")
def pareto(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Score vs cost, one point per variant (CI whiskers), the Pareto front; a panel per cost.

    Costs: ``spec.cost`` / ``report.cost`` (names like ``llm_visual_tokens`` or ``ttft_ms``), else up to two
    of the reported costs that differ between variants (tokens and time to first token first).
    Colour = value of the x axis, marker = setting of the other axes; hollow = dominated.
    """
    asked = spec.get("cost") or study.report.get("cost")
    if asked:
        costs = [asked] if isinstance(asked, str) else list(asked)
        costs = [f"x.{c}" if c not in study.costs and f"x.{c}" in study.costs else c for c in costs]
        costs = [c for c in costs if c in study.costs][:3]
    else:
        costs = [c for c in study.costs if _varying(study, c)][:2]
    if not costs:
        raise SkipFigure("the runs report no cost that differs between variants (tokens, x.ttft_ms ...)")
    if not study.score_name:
        raise SkipFigure("the runs report no suite scores")
    # colour: the first categorical axis (block, pooling ...; else x); marker: the setting of the others
    cat = [a for a in study.axes if not study.numeric(a)]
    x = cat[0] if cat else study.x
    others = [a for a in study.axes if a != x]
    settings = [_setting_key(v, others) for v in study.variants]
    setting_ids = {k: i for i, k in enumerate(dict.fromkeys(settings))}
    xs_order = {repr(v): i for i, v in enumerate(study.axis_order.get(x, []))} if x else {}
    label_axes = [x, *others] if x else []

    def look(v: Variant) -> tuple[str, str]:
        ci = xs_order.get(repr(v.values.get(x)), 0) if x else study.variants.index(v)
        mi = setting_ids[_setting_key(v, others)] if x else study.variants.index(v)
        return style.color(ci), style.marker(mi)

    width = style.COLUMN_WIDTH_IN if len(costs) == 1 else style.PAGE_WIDTH_IN
    fig, axs = _grid(len(costs), width, 2.3)
    used: list[Variant] = []
    for ax, c in zip(axs, costs):
        pts, sums, vs = [], [], []
        for v in study.variants:
            s = study.score_summary(v)
            cs = study.cost_summary(v, c)
            if s.n and cs.n:
                pts.append((cs.mean, s.mean))
                sums.append((cs, s))
                vs.append(v)
        if not pts:
            ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center")
            continue
        front = pareto_front(pts)
        if x and others:  # thin line through each colour's points, by cost: its own trade-off curve
            for xv in study.axis_order.get(x, []):
                line = sorted(p for p, v in zip(pts, vs) if repr(v.values.get(x)) == repr(xv))
                if len(line) > 1:
                    ax.plot([p[0] for p in line], [p[1] for p in line], color=look(
                        next(v for v in vs if repr(v.values.get(x)) == repr(xv)))[0], linewidth=0.6,
                        alpha=0.45, zorder=2)
        ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color="0.55",
                linestyle="--", linewidth=0.8, zorder=1)
        for k, (v, (cs, s)) in enumerate(zip(vs, sums)):
            col, mk = look(v)
            ax.errorbar(cs.mean, s.mean, yerr=_err(s), xerr=_err(cs), fmt=mk, color=col,
                        markerfacecolor=col if k in front else "white", markeredgewidth=0.9, capsize=1.5,
                        elinewidth=0.6, zorder=3)
            if v not in used:
                used.append(v)
            if s.n < MIN_SEEDS:
                ax.annotate(f"n={s.n}", (cs.mean, s.mean), textcoords="offset points", xytext=(4, -6),
                            fontsize=5, color="0.3")
        xs = [p[0] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            _log_axis(ax)
        ax.set_xlabel(style.axis_title(c))
        ax.grid(True, axis="both")
    overall = study.overall is not None
    axs[0].set_ylabel(style.metric_title(study.metric) if overall else
                      "Mean " + style.metric_title(study.metric)[0].lower() + style.metric_title(study.metric)[1:])
    used.sort(key=lambda v: (xs_order.get(repr(v.values.get(x)), 0) if x else 0,
                             setting_ids[_setting_key(v, others)], study.variants.index(v)))
    handles = [Line2D([], [], linestyle="none", color=look(v)[0], marker=look(v)[1], markersize=4)
               for v in used]
    if handles:
        ncol = 2 if len(costs) == 1 else min(len(handles), 4)
        fig.legend(handles, [short_label(study, v, label_axes) for v in used], loc="lower center", ncol=ncol,
                   bbox_to_anchor=(0.5, 0.0), handletextpad=0.3, columnspacing=1.0)
        rows = math.ceil(len(handles) / ncol)
        fig.tight_layout(rect=(0, min(0.075 * rows + 0.02, 0.5), 1, 1))
    else:
        fig.tight_layout()
    cap = (f"{study.name}: {style.metric_title(study.metric)} ({study.score_name}) vs cost; filled markers "
           f"on the dashed Pareto front (no variant is both cheaper and better), hollow ones dominated. "
           f"{_few_note(study)}")
    return FigureResult(fig, cap)
