"""Report kinds for the MambaMia v2 studies; a plugin: ``report.plugins: [harness.report.figures_v2]``.

Figures (``report.figures`` entries; options in braces):

``five_way_panels``  the paper's controlled-comparison layout, three panels: frames vs accuracy, frames vs
                     latency (log), latency (symlog) vs accuracy; a line per compressor. Compressors are
                     named by ``report.compressors`` (a list of ``name: {axis label: value}``, first match wins).
                     ``{latency: x.ttft_ms}`` picks the latency; default: the first recorded of
                     ``x.ttft_ms``, ``x.compressor_ms``, then ``x.eval_time_s`` (whole-evaluation wall
                     time, a proxy the caption names). Out-of-memory runs are drawn as "OOM".
``cost_bars``        training time and peak inference memory per compressor, at one frame count each
                     (``{train_frames: 64, mem_frames: 256}``; defaults: 64 if run else the largest, and the
                     largest); out-of-memory bars hatched and labelled "OOM"; the paper's values in the caption.
``delta_curve``      the TAA's delta_t per frame of one video, kept frames marked, cumulative delta with
                     the threshold multiples (``{run: RUN_ID}``; default the first run that logged a trace).

Tables:

``reported_vs_reproduced``  the paper's rows (``results/reference/*.yaml``, table ``report.reference`` or
                     every table with rows matched to this study) beside the reproduced variant of each row:
                     the paper's columns and its difference to the baseline row, the reproduced score
                     (mean ± CI over seeds), the paired difference to the reproduced baseline, and each
                     side's protocol. The notes test each claim of the reference file on this study
                     (same direction or not, with the paired CI).

A run is out of memory when it failed with an out-of-memory reason, or its record has ``extra.oom: true``.
The delta trace is the run record's ``extra.taa_trace`` (``harness.model.taa.taa_trace``). The figures read
the results store only (run records through the store next to the study index).
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.reference_numbers import ReferenceError, load_reference, protocol_text
from harness.report import style  # noqa: E402
from harness.report.data import ReportError, RunInfo, StudyData, Variant, fmt_value  # noqa: E402
from harness.report.figures import FigureResult, SkipFigure, register_figure  # noqa: E402
from harness.report.stats import Summary, paired  # noqa: E402
from harness.report.tables import Cell, Column, Table, register_table, runs_text  # noqa: E402
from harness.store import ResultsStore  # noqa: E402

OOM_RE = re.compile(r"out of memory|OutOfMemoryError|\bOOM\b", re.IGNORECASE)
LATENCY_KEYS = ("x.ttft_ms", "x.compressor_ms", "x.eval_time_s")
LATENCY_TITLES = {"x.ttft_ms": "Time to first token (ms)", "x.compressor_ms": "Compressor latency (ms)",
                  "x.eval_time_s": "Evaluation wall time (s, proxy)"}


# ------------------------------------------------------------------------------------------ helpers
@cache
def _read_run(store_root: str, run_id: str) -> dict[str, Any]:
    return ResultsStore(store_root).read_run(run_id) or {}


def run_record(study: StudyData, run_id: str) -> dict[str, Any]:
    """The raw run record (``<store>/runs/<id>.json``) of a run of ``study``."""
    return _read_run(str(Path(study.index_path).parent.parent), run_id)


def is_oom(study: StudyData, r: RunInfo) -> bool:
    """The run ran out of memory: failed with an OOM reason, or recorded ``extra.oom: true``."""
    if r.status == "failed" and OOM_RE.search(r.reason or ""):
        return True
    return bool((run_record(study, r.run_id).get("extra") or {}).get("oom"))


def variant_oom(study: StudyData, v: Variant) -> bool:
    """Every finished run of the variant is out of memory (and there is at least one)."""
    ended = [r for r in v.runs if r.status in ("done", "failed")]
    return bool(ended) and all(is_oom(study, r) for r in ended)


def _same(a: Any, b: Any) -> bool:
    return fmt_value(a).lower() == fmt_value(b).lower()


def matches(v: Variant, want: dict[str, Any]) -> bool:
    """All ``{axis label: value}`` of ``want`` equal the variant's (as text; ``true`` == ``True``)."""
    return all(a in v.values and _same(v.values[a], val) for a, val in want.items())


def compressor_specs(study: StudyData) -> list[tuple[str, dict[str, Any]]]:
    """``report.compressors`` as ordered ``(name, {axis label: value})`` pairs. The YAML form is a list of
    one-key mappings (``- proposed: {taa: true}``), which keeps its order through the JSON study index; a
    plain mapping is accepted too (its order is then alphabetical)."""
    raw = study.report.get("compressors") or []
    items = list(raw.items()) if isinstance(raw, dict) else []
    if isinstance(raw, list):
        for i, e in enumerate(raw):
            if not isinstance(e, dict) or len(e) != 1:
                raise ReportError(f"{study.index_path}: report.compressors[{i}] must be one 'name: {{axis: value}}'")
            items.append(next(iter(e.items())))
    elif not isinstance(raw, dict):
        raise ReportError(f"{study.index_path}: report.compressors must be a list of 'name: {{axis: value}}'")
    for name, want in items:
        if not isinstance(want, dict):
            raise ReportError(f"{study.index_path}: report.compressors.{name} must be a mapping axis -> value")
        for a in want:
            if a not in study.axes:
                raise ReportError(f"{study.index_path}: report.compressors.{name}: {a!r} is not an axis "
                                  f"(axes: {', '.join(study.axes)})")
    return [(str(n), w) for n, w in items]


def compressor_name(study: StudyData, v: Variant) -> str:
    """The variant's name from ``report.compressors`` (first match), else its axis values without x."""
    for name, want in compressor_specs(study):
        if matches(v, want):
            return name
    return ", ".join(f"{a}={fmt_value(v.values.get(a))}" for a in study.axes if a != study.x) or v.label


def series(study: StudyData) -> dict[str, list[Variant]]:
    """Compressor name -> its variants in x order; names in ``report.compressors`` order, then the rest."""
    out: dict[str, list[Variant]] = {}
    for v in study.variants:
        out.setdefault(compressor_name(study, v), []).append(v)
    rank = {n: i for i, (n, _) in enumerate(compressor_specs(study))}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _x_axis(study: StudyData, spec: dict[str, Any]) -> str:
    x = spec.get("x") or study.x
    if x is None or not study.numeric(x):
        raise SkipFigure(f"needs a numeric x axis (frames); the study's x is {x!r}")
    return x


def latency_key(study: StudyData, spec: dict[str, Any]) -> str:
    want = spec.get("latency")
    keys = [want] if want else list(LATENCY_KEYS)
    for k in keys:
        if any(k in r.costs for r in study.runs):
            return k
    raise SkipFigure(f"no latency recorded (looked for {', '.join(keys)} in the run records)")


def _err(s: Summary) -> float:
    return s.half if s.n >= 2 and math.isfinite(s.half) else 0.0


def _log2_frames(ax: Any, xs: list[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.minorticks_off()


# ------------------------------------------------------------------------------------------ figures
@register_figure("five_way_panels")
def five_way_panels(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Frames vs accuracy | frames vs latency | latency (symlog) vs accuracy, a line per compressor."""
    x = _x_axis(study, spec)
    lat = latency_key(study, spec)
    groups = series(study)
    fig, axs = plt.subplots(1, 3, figsize=(style.PAGE_WIDTH_IN, 2.3))
    xs_all = sorted({float(v.values[x]) for v in study.variants})
    oom_notes = []
    for i, (name, vs) in enumerate(groups.items()):
        c, m = style.color(i), style.marker(i)
        pts = []
        for v in vs:
            xv = float(v.values[x])
            if variant_oom(study, v):
                oom_notes.append(f"{name} at {x}={v.values[x]:g}")
                for ax in axs[:2]:
                    ax.annotate("OOM", (xv, 1.0), xycoords=("data", "axes fraction"), color=c, fontsize=6,
                                ha="center", va="top")
                continue
            acc, cost = study.score_summary(v), study.cost_summary(v, lat)
            pts.append((xv, acc, cost))
        if not pts:
            continue
        xv = [p[0] for p in pts]
        acc_pts = [(p[0], p[1]) for p in pts if p[1].n]
        if acc_pts:
            axs[0].errorbar([p[0] for p in acc_pts], [p[1].mean for p in acc_pts],
                            yerr=[_err(p[1]) for p in acc_pts], color=c, marker=m, label=name, capsize=2)
        lat_pts = [(p[0], p[2]) for p in pts if p[2].n]
        if lat_pts:
            axs[1].errorbar([p[0] for p in lat_pts], [p[1].mean for p in lat_pts],
                            yerr=[_err(p[1]) for p in lat_pts], color=c, marker=m, capsize=2)
        both = [p for p in pts if p[1].n and p[2].n]
        if both:
            axs[2].plot([p[2].mean for p in both], [p[1].mean for p in both], color=c, marker=m)
            for p in both:
                axs[2].annotate(f"{p[0]:g}", (p[2].mean, p[1].mean), fontsize=5, xytext=(2, 2),
                                textcoords="offset points", color=c)
        del xv
    for ax in axs[:2]:
        _log2_frames(ax, xs_all)
        ax.set_xlabel(style.axis_title(x) if hasattr(style, "axis_title") else x)
    ylab = f"{style.metric_title(study.metric)} ({study.score_name})" if study.score_name else study.metric
    axs[0].set_ylabel(ylab)
    axs[1].set_yscale("log")
    axs[1].set_ylabel(LATENCY_TITLES.get(lat, lat))
    axs[2].set_xscale("symlog")
    axs[2].set_xlabel(LATENCY_TITLES.get(lat, lat) + ", symlog")
    axs[2].set_ylabel(ylab)
    chance = study.chance() if hasattr(study, "chance") else None
    if chance is not None:
        for ax in (axs[0], axs[2]):
            ax.axhline(chance, color="0.35", linestyle=":", linewidth=0.9, zorder=0.8)
    axs[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    caption = (f"{study.name}: frames vs accuracy, frames vs latency ({LATENCY_TITLES.get(lat, lat)}), latency "
               f"vs accuracy (symlog), a line per compressor; mean ± 95% CI over seeds; point labels in the "
               f"third panel are frame counts.")
    if lat == "x.eval_time_s":
        caption += " Latency is the whole evaluation's wall time (no per-item latency recorded): a proxy."
    if oom_notes:
        caption += " Out of memory: " + "; ".join(oom_notes) + "."
    return FigureResult(fig, caption)


def _auto_unit(values: list[float], kind: str) -> tuple[float, str]:
    """(divisor, unit) so that bars read well: seconds/minutes/hours or MiB/GiB."""
    top = max(values) if values else 0.0
    if kind == "time":
        return (3600.0, "h") if top >= 7200 else (60.0, "min") if top >= 120 else (1.0, "s")
    return (1024.0, "GiB") if top >= 1024 else (1.0, "MiB")


@register_figure("cost_bars")
def cost_bars(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """Training time (at ``train_frames``) and peak inference memory (at ``mem_frames``) per compressor."""
    x = _x_axis(study, spec)
    xs = sorted({float(v.values[x]) for v in study.variants})
    train_frames = float(spec.get("train_frames") or (64 if 64 in xs else xs[-1]))
    mem_frames = float(spec.get("mem_frames") or xs[-1])
    panels = [("Training time", spec.get("train_key", "x.train_train_time_s"), train_frames, "time"),
              ("Peak inference memory", spec.get("mem_key", "x.peak_mem_mb"), mem_frames, "mem")]
    groups = series(study)
    have = [any(k in r.costs for r in study.runs) or any(variant_oom(study, v) for v in study.variants)
            for _, k, _, _ in panels]
    if not any(have):
        raise SkipFigure(f"no {panels[0][1]} or {panels[1][1]} recorded")
    fig, axs = plt.subplots(1, 2, figsize=(style.PAGE_WIDTH_IN, 2.2))
    notes = []
    for ax, (title, key, frames, kind), ok in zip(axs, panels, have):
        vals, ooms, names = [], [], list(groups)
        for name in names:
            v = next((v for v in groups[name] if float(v.values[x]) == frames), None)
            if v is None:
                vals.append(None)
                ooms.append(False)
                continue
            oom = variant_oom(study, v)
            s = study.cost_summary(v, key)
            vals.append(s.mean if s.n and not oom else None)
            ooms.append(oom)
        div, unit = _auto_unit([v for v in vals if v is not None], kind)
        top = max([v / div for v in vals if v is not None], default=1.0)
        for i, (val, oom) in enumerate(zip(vals, ooms)):
            if oom:
                ax.bar(i, top * 1.05, color="white", edgecolor=style.color(i), hatch="////")
                ax.text(i, top * 1.07, "OOM", ha="center", va="bottom", fontsize=6)
            elif val is not None:
                ax.bar(i, val / div, color=style.color(i), hatch=style.hatch(i))
                ax.text(i, val / div, f"{val / div:.3g}", ha="center", va="bottom", fontsize=6)
            elif ok:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=6)
        ax.set_ylabel(f"{title} ({unit})")
        ax.set_title(f"{x} = {frames:g}", fontsize=7)
        ax.set_ylim(0, top * 1.25)
        if not ok:
            notes.append(f"{key} not recorded")
            ax.text(0.5, 0.5, f"{key} not recorded", transform=ax.transAxes, ha="center", va="center",
                    fontsize=7, color="0.4")
    fig.tight_layout()
    caption = (f"{study.name}: training time at {x}={train_frames:g} and peak inference memory at "
               f"{x}={mem_frames:g} per compressor (mean over seeds; hatched 'OOM': out of memory).")
    ref = _reference_cost_caption(study)
    if ref:
        caption += " Paper: " + ref
    if notes:
        caption += " Not recorded: " + "; ".join(notes) + "."
    return FigureResult(fig, caption)


def _reference_cost_caption(study: StudyData) -> str:
    try:
        ref = load_reference(study.report.get("reference_file"))
    except Exception:  # noqa: BLE001 - the caption is optional context
        return ""
    parts = []
    for t in ref.tables_for_study(study.name):
        for r in t.rows_for_study(study.name):
            vals = [f"{t.columns[c]} {r.values[c]:g}" for c in t.columns if c in r.values]
            vals += [f"{t.columns[c]} OOM" for c in r.oom]
            if vals:
                parts.append(f"{r.label}: " + ", ".join(vals))
    return "; ".join(parts) + "." if parts else ""


def _find_trace(study: StudyData, run_id: str | None) -> tuple[RunInfo, dict[str, Any]]:
    """The TAA trace of run ``run_id``, else of the first run that samples by delta, else of the first
    run with a trace."""
    first = None
    for v in study.variants:
        for r in v.runs:
            if run_id and r.run_id != run_id:
                continue
            tr = (run_record(study, r.run_id).get("extra") or {}).get("taa_trace")
            if r.status == "done" and isinstance(tr, dict) and tr.get("delta"):
                if run_id or tr.get("sampling") == "delta":
                    return r, tr
                first = first or (r, tr)
    if first is not None:
        return first
    if run_id:
        raise SkipFigure(f"run {run_id} has no extra.taa_trace")
    raise SkipFigure("no run recorded extra.taa_trace (harness.model.taa.taa_trace, logged by the evaluation)")


@register_figure("delta_curve")
def delta_curve(study: StudyData, spec: dict[str, Any]) -> FigureResult:
    """delta_t per frame of one video; kept frames marked; cumulative delta and threshold multiples."""
    r, tr = _find_trace(study, spec.get("run"))
    delta = np.asarray(tr["delta"], dtype=float)
    frames = np.asarray(tr.get("step_frames") or list(range(len(delta))), dtype=float)
    kept = set(int(k) for k in tr.get("kept") or [])
    fig, ax = plt.subplots(figsize=(style.COLUMN_WIDTH_IN, 2.0))
    ax.plot(frames, delta, color=style.color(0), linewidth=1.0, label="delta_t")
    sel = [i for i, f in enumerate(frames) if int(f) in kept]
    ax.scatter(frames[sel], delta[sel], color=style.color(1), marker="o", s=12, zorder=3, label="kept")
    ax.set_xlabel("Frame")
    ax.set_ylabel("delta_t (TAA step size)")
    ax2 = ax.twinx()
    cum = np.cumsum(delta)
    ax2.step(frames, cum, where="post", color="0.5", linewidth=0.8, label="cumulative")
    thr = tr.get("threshold")
    if tr.get("sampling") == "delta" and thr:
        for j in range(1, int(cum[-1] / thr) + 1):
            ax2.axhline(j * thr, color="0.8", linewidth=0.5, linestyle=":")
    ax2.set_ylabel("cumulative delta", fontsize=6)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=5, loc="upper left")
    fig.tight_layout()
    variant = next((v.label for v in study.variants if r in v.runs), r.label)
    caption = (f"{study.name}: the TAA's delta_t per frame for video {tr.get('video', '?')} (run {r.run_id}, "
               f"{variant}, seed {r.seed}); {len(kept)} of {len(delta)} steps kept by "
               f"{tr.get('sampling', '?')} sampling" + (f" (threshold {thr:g})" if thr else "") +
               f": {sorted(kept)}.")
    return FigureResult(fig, caption)


# ------------------------------------------------------------------------------------------ tables
def run_protocol(study: StudyData, v: Variant) -> str:
    """The reproduced side's protocol from the first finished run's config: frames, tokens, LLM, encoder."""
    r = next((r for r in v.runs if r.status == "done"), None) or (v.runs[0] if v.runs else None)
    if r is None:
        return ""
    cfg = run_record(study, r.run_id).get("config") or {}
    model, data, ev = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("eval") or {}
    llm, enc = model.get("llm") or {}, model.get("encoder") or {}
    parts = []
    if data.get("n_frames"):
        parts.append(f"frames {data['n_frames']}")
    tok = study.cost_summary(v, "llm_visual_tokens")
    if tok.n:
        parts.append(f"tokens {tok.mean:g}")
    if llm:
        name = llm.get("name_or_path") or f"{llm.get('preset', '?')} {llm.get('arch', '')}"
        parts.append(f"LLM {name} (h{llm.get('hidden_size', '?')}, {llm.get('n_layers', '?')} layers)")
    if enc:
        parts.append(f"encoder {enc.get('name_or_path') or enc.get('name', '?')}")
    if ev.get("tasks"):
        parts.append(f"suites {', '.join(ev['tasks'])} ({ev.get('backend', 'native')})")
    return "; ".join(parts)


def _reference_tables(study: StudyData) -> tuple[Any, list[Any]]:
    try:
        ref = load_reference(study.report.get("reference_file"))
    except ReferenceError as e:
        raise ReportError(str(e)) from e
    names = study.report.get("reference")
    if names:
        names = [names] if isinstance(names, str) else list(names)
        try:
            return ref, [ref.table(n) for n in names]
        except ReferenceError as e:
            raise ReportError(f"{study.index_path}: report.reference: {e}") from e
    return ref, [t for t in ref.tables_for_study(study.name) if t.name != "cost"]


def _variant_for(study: StudyData, row: Any) -> list[Variant]:
    want = (row.match or {}).get("variant") or {}
    return [v for v in study.variants if want and matches(v, want)]


def _pp(study: StudyData, a: Variant, b: Variant) -> Any:
    """Paired a - b of the study score over shared seeds, in display units."""
    k = study.scale()
    return paired({s: x * k for s, x in study.score_values(a).items()},
                  {s: x * k for s, x in study.score_values(b).items()})


@register_table("reported_vs_reproduced")
def reported_vs_reproduced(study: StudyData, options: dict[str, Any]) -> Table | None:
    """The paper's rows beside the reproduced variants (see the module docstring)."""
    ref, tables = _reference_tables(study)
    if not tables:
        return None
    cols = [Column("row", "Paper row"), Column("table", "Paper table")]
    bench: list[tuple[str, str]] = []
    for t in tables:
        for c, name in t.columns.items():
            if (c, name) not in bench:
                bench.append((c, name))
    cols += [Column(f"rep_{c}", f"{name} (paper)", "num", digits=2) for c, name in bench]
    cols += [Column("rep_delta", "Δ paper", "num", digits=2, signed=True),
             Column("variant", "Reproduced variant"),
             Column("score", f"{style.metric_title(study.metric)} (reproduced)", "stat"),
             Column("repro_delta", "Δ reproduced", "stat", signed=True),
             Column("runs", "Runs"), Column("protocol_paper", "Protocol (paper)"),
             Column("protocol_repro", "Protocol (reproduced)")]
    rows = []
    notes = []
    for t in tables:
        dcol = "avg" if "avg" in t.columns else list(t.columns)[-1]
        base_row = t.row(t.baseline) if t.baseline else None
        base_vs = _variant_for(study, base_row) if base_row else []
        for row in t.rows:
            vs = _variant_for(study, row) or [None]
            for v in vs:
                cells = [Cell(text=row.label), Cell(text=t.name)]
                cells += [Cell(text="OOM") if c in row.oom else Cell(num=row.values.get(c)) if c in row.values
                          and c in t.columns else Cell() for c, _ in bench]
                d = (row.values[dcol] - base_row.values[dcol]
                     if base_row and dcol in row.values and dcol in base_row.values else None)
                cells.append(Cell(num=d))
                if v is None:
                    cells += [Cell(text="not run"), Cell(), Cell(), Cell(text="")]
                else:
                    rd = None
                    if base_vs and v is not base_vs[0]:
                        rd = _pp(study, v, base_vs[0]).diff
                    elif base_vs:
                        rd = Summary(0, float("nan"), float("nan"), float("nan"))
                    cells += [Cell(text=v.label), Cell(stat=study.score_summary(v)),
                              Cell(stat=rd) if rd is not None and rd.n else Cell(), Cell(text=runs_text(v))]
                cells += [Cell(text=protocol_text(row.protocol)), Cell(text=run_protocol(study, v) if v else "")]
                rows.append(cells)
        if base_row:
            notes.append(f"{t.name}: Δ = row − '{base_row.label}' on {t.columns[dcol]} (paper) and on the "
                         f"reproduced score (paired over seeds, mean ± 95% CI).")
        notes.append(f"{t.name} protocol (paper): " + "; ".join(f"{k}: {val}" for k, val in t.protocol.items()))
    notes += claim_notes(study, ref, tables)
    caption = (f"{study.name}: reported (paper, {ref.path.name}) vs reproduced; the benchmarks differ, so "
               "compare the differences between rows, not the absolute numbers.")
    return Table("table_reported_vs_reproduced", caption, cols, rows, notes, f"tab:{study.name}-rvr")


def claim_notes(study: StudyData, ref: Any, tables: list[Any]) -> list[str]:
    """One line per claim of the reference file whose rows this study reproduces."""
    names = {t.name for t in tables}
    out = []
    for c in ref.claims:
        if c.get("table") not in names:
            continue
        t = ref.table(c["table"])
        ra, rb = t.row(c["a"]), t.row(c["b"])
        reported = ra.values[c["column"]] - rb.values[c["column"]]
        va, vb = _variant_for(study, ra), _variant_for(study, rb)
        if not va or not vb:
            out.append(f"claim {c['id']} ({c['text']}): paper {reported:+.2f}; not reproduced (variant not run).")
            continue
        p = _pp(study, va[0], vb[0])
        s = p.diff
        if not s.n:
            out.append(f"claim {c['id']} ({c['text']}): paper {reported:+.2f}; reproduced: no paired seeds yet.")
            continue
        if abs(s.mean) < 1e-9:
            direction = "no difference"
        else:
            direction = "same direction" if (s.mean > 0) == (reported > 0) else "opposite direction"
        if s.n >= 2 and math.isfinite(s.half):
            sig = s.lo > 0 or s.hi < 0
            verdict = f"{direction}, {'CI excludes 0' if sig else 'CI includes 0 (not resolved)'}"
            rep = f"{s.mean:+.2f} ± {s.half:.2f} (n={s.n}, p={p.p_value:.3g})"
        else:
            verdict = f"{direction}, one seed: no interval"
            rep = f"{s.mean:+.2f} (n={s.n})"
        out.append(f"claim {c['id']} ({c['text']}): paper {reported:+.2f}; reproduced {rep}: {verdict}.")
    return out
