"""One study, read from the results store only, arranged for tables and figures.

``load_study(store, name)`` reads ``studies/<name>.json`` (axes, variants, seeds, the ``report:`` section)
and the run records (through ``ResultsStore.records()`` for the metric values and per-run scalars, and
the records themselves for finish times, commits and the evaluated suites). Nothing else is read: no
spec YAML, no run folders, no logs.

Terms: a *variant* is one combination of axis values (one table row); it has one run per seed. A *group*
is a suite score (``mia_long``, ``mia_dense``, ``overall``: the run config's ``eval.tasks``); a *task* is a
per-family score inside a suite (``mia_needle_what`` ...). The *score* of a run is its ``overall`` value
or, without one, the mean of its group values (only when the run has all of them).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.identity import code_stale_reason
from harness.report import style
from harness.report.stats import Summary, summarize
from harness.store import ResultsStore

STATUSES = ("done", "failed", "running", "missing")
OVERALL = ("overall", "mia_all")  # a run's single overall score, when its evaluator reports one
KNOWN_GROUPS = ("mia_long", "mia_dense", "paper_long", "paper_dense")  # suite scores, in this order


#: record ``extra`` keys a report may show as words (harness.model.registry.compressor_facts, the saliency)
FACT_KEYS = ("compressor", "compressor_entry", "training_free", "saliency", "parent_run")


def fmt_value(v: Any) -> str:
    """An axis value as text: mappings and lists as compact JSON (as the sweep labels them), else str."""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


class ReportError(ValueError):
    """Bad input for the report; the message names the file and key."""


@dataclass
class RunInfo:
    """One run of a study: its variant and seed, its status, its scores and costs."""

    run_id: str
    seed: int | None
    variant: dict[str, Any]
    label: str
    status: str  # done | failed | running | missing
    reason: str | None = None
    finished: str | None = None
    git_commit: str | None = None
    device: str | None = None  # GPU name or "cpu" (job.device); None in records from before it was kept
    protocol: str | None = None  # config.protocol: lmm | probe (lmm for records from before the field)
    # why a done run's result is stale (older code, config schema or data: harness.identity), or None
    stale: str | None = None
    values: dict[tuple[str, str], float] = field(default_factory=dict)  # (task, metric) -> value
    costs: dict[str, float] = field(default_factory=dict)  # cost key -> value (tokens, x.ttft_ms ...)
    failed_samples: dict[str, int] = field(default_factory=dict)  # task -> samples whose video failed
    # what the record says of the run's parts besides numbers: extra.compressor, training_free, saliency ...
    facts: dict[str, Any] = field(default_factory=dict)
    trackers: dict[str, str] = field(default_factory=dict)  # tracker name -> its run (URL or offline folder)


@dataclass
class Variant:
    """One table row: the axis values and the runs (one per seed) that share them."""

    values: dict[str, Any]  # axis label -> value (original type)
    label: str  # "block=bi_ssm, period=8"
    runs: list[RunInfo] = field(default_factory=list)

    def counts(self) -> Counter:
        """Runs per status (done, failed, running, missing)."""
        return Counter(r.status for r in self.runs)

    def seed_values(self, task: str, metric: str) -> dict[int, float]:
        """``{seed: value}`` over the done runs that have ``(task, metric)``."""
        out: dict[int, float] = {}
        for i, r in enumerate(self.runs):
            v = r.values.get((task, metric))
            if r.status == "done" and v is not None and math.isfinite(v):
                out[r.seed if r.seed is not None else -1 - i] = v
        return out

    def cost_values(self, key: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for i, r in enumerate(self.runs):
            v = r.costs.get(key)
            if r.status == "done" and v is not None and math.isfinite(v):
                out[r.seed if r.seed is not None else -1 - i] = v
        return out


@dataclass
class StudyData:
    """A study as tables and figures need it. Orders are deterministic for a given store."""

    name: str
    index_path: Path
    description: str
    spec_path: str
    created: str
    overrides: list[str]  # the sweep's --set overrides
    axes: dict[str, str]  # axis label -> dotted RunConfig path, x axis first
    report: dict[str, Any]
    runs: list[RunInfo]
    variants: list[Variant]
    metric: str  # the primary metric (``acc``)
    metrics: list[str]
    groups: list[str]  # suite-level scores, in the order the runs evaluated them
    tasks: list[str]  # per-family scores, sorted
    costs: list[str]  # cost keys with at least one value
    axis_order: dict[str, list[Any]] = field(default_factory=dict)  # axis -> its values in order
    # the metric each task / group is shown by: ``metric`` where the task has it, else the task's own
    # (Video-MME's videomme_perception_score, LVBench's lvbench_score ...)
    task_metric: dict[str, str] = field(default_factory=dict)
    n_failed: dict[str, int] = field(default_factory=dict)  # run id -> failed samples (unreadable videos)

    def metric_of(self, task: str) -> str:
        return self.task_metric.get(task, self.metric)

    @property
    def mixed_metrics(self) -> bool:
        """Whether the suite columns are different metrics (real benchmarks): then no mean over them."""
        return len({self.metric_of(g) for g in self.groups}) > 1

    # ----------------------------------------------------------------------------- axes and values
    @property
    def x(self) -> str | None:
        """The axis on table rows / figure x: ``report.x`` or the first axis."""
        return next(iter(self.axes), None)

    def numeric(self, axis: str) -> bool:
        vals = self.axis_order.get(axis, [])
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    def determined_by(self, axis: str) -> list[str]:
        """Other axes whose value is fixed by ``axis`` (``zip:`` partners), e.g. budget by period."""
        out = []
        for other in self.axes:
            if other == axis:
                continue
            seen: dict[str, set[str]] = {}
            for v in self.variants:
                seen.setdefault(repr(v.values.get(axis)), set()).add(repr(v.values.get(other)))
            if all(len(s) == 1 for s in seen.values()):
                out.append(other)
        return out

    def series_axes(self, x: str) -> list[str]:
        """Axes that split the data into separate lines/panels once ``x`` is on the x axis."""
        fixed = set(self.determined_by(x))
        return [a for a in self.axes if a != x and a not in fixed]

    def scale(self, metric: str | None = None, task: str | None = None) -> float:
        """100 for fraction metrics shown in percent (``acc``, LVBench's ``lvbench_score``), else 1
        (``videomme_perception_score`` is a percentage already)."""
        return 100.0 if style.is_fraction(metric or self.metric, task) else 1.0

    # ------------------------------------------------------------------------------------- scores
    @property
    def overall(self) -> str | None:
        """The group that is the runs' overall score (``mia_all`` / ``overall``), if they report one."""
        return next((g for g in self.groups if g in OVERALL), None)

    @property
    def score_name(self) -> str:
        if self.overall:
            return "overall"
        return "mean of " + ", ".join(style.suite_name(g) for g in self.groups) if self.groups else ""

    def score_values(self, variant: Variant) -> dict[int, float]:
        """Per seed: the overall score or the mean of the group values (a run missing one is left out)."""
        if self.overall:
            return variant.seed_values(self.overall, self.metric_of(self.overall))
        if not self.groups or self.mixed_metrics:
            return {}
        per = [variant.seed_values(g, self.metric_of(g)) for g in self.groups]
        seeds = set.intersection(*(set(p) for p in per))
        return {s: sum(p[s] for p in per) / len(per) for s in sorted(seeds)}

    def summary(self, variant: Variant, task: str, metric: str | None = None) -> Summary:
        """Mean ± CI over seeds of ``task``/``metric`` (default: the task's own metric; in display units:
        percent for ``acc``)."""
        m = metric or self.metric_of(task)
        return summarize(variant.seed_values(task, m).values()).scaled(self.scale(m, task))

    def score_summary(self, variant: Variant) -> Summary:
        g = self.overall or (self.groups[0] if self.groups else None)
        return summarize(self.score_values(variant).values()).scaled(
            self.scale(self.metric_of(g) if g else None, g))

    def cost_summary(self, variant: Variant, key: str) -> Summary:
        return summarize(variant.cost_values(key).values())

    # ---------------------------------------------------------------------------------- provenance
    @property
    def latest(self) -> str:
        """The newest finish time among the study's runs (or the study's creation): 'data as of'."""
        times = [r.finished for r in self.runs if r.finished]
        return max(times) if times else (self.created or "unknown")

    def status_counts(self) -> Counter:
        return Counter(r.status for r in self.runs)

    def chance(self) -> float | None:
        """Chance accuracy in display units when every run that reports ``extra.chance`` agrees on it."""
        vals = {r.costs.get("x.chance") for r in self.runs if "x.chance" in r.costs}
        return vals.pop() * self.scale() if len(vals) == 1 else None

    def stale_runs(self) -> list[RunInfo]:
        """Done runs whose results come from older code, config schema or data (kept, marked)."""
        return [r for r in self.runs if r.status == "done" and r.stale]

    def devices(self) -> Counter:
        """Done runs per device they ran on (``not recorded`` for records that predate the field)."""
        return Counter(r.device or "not recorded" for r in self.runs if r.status == "done")

    def protocols(self) -> Counter:
        """Done runs per protocol that made them (``lmm`` | ``probe``)."""
        return Counter(r.protocol or "lmm" for r in self.runs if r.status == "done")

    def commits(self) -> list[str]:
        return sorted({r.git_commit for r in self.runs if r.git_commit})

    def find_variants(self, value: Any, axis: str | None = None) -> list[Variant]:
        """Variants whose ``axis`` (default: x) equals ``value`` (compared as text: ``8`` == ``"8"``)."""
        ax = axis or self.x
        return [v for v in self.variants if fmt_value(v.values.get(ax)) == fmt_value(value)]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    return None


def _order_key(vals: list[Any]) -> dict[str, int]:
    """Position of each value of an axis: numeric axes ascending, others in order of first appearance."""
    if vals and all(_num(v) is not None for v in vals):
        vals = sorted(vals, key=lambda v: float(v))
    return {repr(v): i for i, v in enumerate(vals)}


def load_study(store: ResultsStore, name: str) -> StudyData:
    """Read one study from ``store``; raise :class:`ReportError` naming the file and key on bad input."""
    index_path = store.studies_dir / f"{name}.json"
    try:
        index = store.read_study(name)
    except ValueError as e:  # unsafe name
        raise ReportError(str(e)) from e
    except FileNotFoundError as e:
        known = ", ".join(store.studies()) or "none"
        raise ReportError(f"{e} (studies in {store.studies_dir}: {known})") from e
    if not isinstance(index.get("runs"), list):
        raise ReportError(f"{index_path}: key 'runs' must be a list of run entries")
    report = index.get("report") or {}
    if not isinstance(report, dict):
        raise ReportError(f"{index_path}: key 'report' must be a mapping, got {type(report).__name__}")

    axes: dict[str, str] = dict(index.get("axes") or {})
    for i, entry in enumerate(index["runs"]):
        if not isinstance(entry, dict) or "run_id" not in entry:
            raise ReportError(f"{index_path}: runs[{i}] needs a 'run_id'")
        for k in entry.get("variant") or {}:
            axes.setdefault(k, k)
    x = report.get("x")
    if x is not None and x not in axes:
        raise ReportError(f"{index_path}: report.x = {x!r} is not an axis of the study "
                          f"(axes: {', '.join(axes) or 'none'})")
    order = ([x] if x else []) + [a for a in sorted(axes) if a != x]
    axes = {a: axes[a] for a in order}

    df = store.records(name)
    by_run: dict[str, list[dict[str, Any]]] = {}
    if len(df):
        for row in df.to_dict("records"):
            by_run.setdefault(row["run_id"], []).append(row)

    runs: list[RunInfo] = []
    eval_tasks: list[str] = []
    task_metrics: dict[str, list[str]] = {}  # task -> its metrics in the order the records list them
    n_failed: dict[str, int] = {}
    for entry in index["runs"]:
        rid = entry["run_id"]
        rows = by_run.get(rid, [])
        rec = store.read_run(rid) or {}
        status = rec.get("status") or "missing"
        if status not in STATUSES:
            status = "running" if status in ("pending", "queued") else "failed"
        for t in ((rec.get("config") or {}).get("eval") or {}).get("tasks") or []:
            if t not in eval_tasks:
                eval_tasks.append(t)
        info = RunInfo(run_id=rid, seed=entry.get("seed", rec.get("seed")),
                       variant=dict(entry.get("variant") or {}), label=entry.get("label", rid),
                       status=status, reason=rec.get("reason"), finished=rec.get("finished"),
                       git_commit=rec.get("git_commit"), device=(rec.get("job") or {}).get("device"),
                       protocol=(rec["config"].get("protocol") or "lmm") if rec.get("config") else None,
                       trackers={str(k): str(v) for k, v in (rec.get("trackers") or {}).items()})
        for m in rec.get("metrics") or [] if status == "done" else []:
            if isinstance(m, dict) and isinstance(m.get("task"), str) and isinstance(m.get("metric"), str):
                lst = task_metrics.setdefault(m["task"], [])
                if m["metric"] not in lst:
                    lst.append(m["metric"])
        if status == "done":
            n_failed[rid] = int((rec.get("extra") or {}).get("n_failed") or 0)
            info.facts = {k: v for k, v in (rec.get("extra") or {}).items()
                          if k in FACT_KEYS and isinstance(v, (str, bool, int, float))}
            info.stale = entry.get("stale") or code_stale_reason(rec)
        for row in rows:
            if isinstance(row.get("task"), str) and isinstance(row.get("metric"), str):
                info.values[(str(row["task"]), str(row["metric"]))] = float(row["value"])
                k = _num(row.get("n_failed"))
                if k:
                    info.failed_samples[str(row["task"])] = int(k)
            for key in [*style.COST_KEYS, *[c for c in row if str(c).startswith("x.")]]:
                v = _num(row.get(key))
                if v is not None:
                    info.costs[key] = v
        runs.append(info)

    axis_order = {}
    for a in axes:
        vals: list[Any] = []
        for r in runs:
            v = r.variant.get(a)
            if all(repr(v) != repr(u) for u in vals):
                vals.append(v)
        pos = _order_key(vals)
        axis_order[a] = sorted(vals, key=lambda v, pos=pos: pos[repr(v)])
    keys = {a: _order_key(axis_order[a]) for a in axes}

    variants: dict[tuple[str, ...], Variant] = {}
    for r in runs:
        key = tuple(repr(r.variant.get(a)) for a in axes)
        if key not in variants:
            vals = {a: r.variant.get(a) for a in axes}
            label = ", ".join(f"{a}={fmt_value(vals[a])}" for a in axes) or r.label
            variants[key] = Variant(vals, label)
        variants[key].runs.append(r)
    ordered = sorted(variants.values(), key=lambda v: tuple(keys[a][repr(v.values[a])] for a in axes))
    for v in ordered:
        v.runs.sort(key=lambda r: (r.seed if r.seed is not None else 1 << 30, r.run_id))

    seen_tasks = sorted({t for r in runs for (t, _) in r.values})
    metrics = sorted({m for r in runs for (_, m) in r.values})
    metric = report.get("metric") or ("acc" if "acc" in metrics or not metrics else metrics[0])
    if metrics and metric not in metrics:
        raise ReportError(f"{index_path}: report.metric = {metric!r} is not in the runs' metrics "
                          f"({', '.join(metrics)})")
    groups_cfg = report.get("groups")
    if groups_cfg is not None and not isinstance(groups_cfg, list):
        raise ReportError(f"{index_path}: report.groups must be a list of task names")
    if groups_cfg:
        groups = [g for g in groups_cfg if g in seen_tasks]
    else:
        # suites the runs were asked to evaluate; all of them when no run has a score yet (dash columns)
        groups = [t for t in eval_tasks if (t in seen_tasks or not seen_tasks) and t not in OVERALL]
        groups += [t for t in KNOWN_GROUPS if t in seen_tasks and t not in groups]
        groups += [t for t in OVERALL if t in seen_tasks or (not seen_tasks and t in eval_tasks)]
    tasks = [t for t in seen_tasks if t not in groups]
    if not groups:  # the runs report no suite scores: the per-family scores are the columns
        groups, tasks = tasks, []
    task_metric = {t: (metric if metric in ms else ms[0]) for t, ms in task_metrics.items() if ms}
    extra_costs = [c for c in report.get("cost", []) or [] if c not in style.COST_KEYS]
    costs = [c for c in [*style.COST_KEYS, *extra_costs] if any(c in r.costs for r in runs)]
    return StudyData(name=name, index_path=index_path, description=str(index.get("description") or ""),
                     spec_path=str(index.get("spec_path") or ""), created=str(index.get("created") or ""),
                     overrides=[str(o) for o in index.get("overrides") or []],
                     axes=axes, report=report, runs=runs, variants=ordered, metric=metric, metrics=metrics,
                     groups=groups, tasks=tasks, costs=costs, axis_order=axis_order, task_metric=task_metric,
                     n_failed=n_failed)
