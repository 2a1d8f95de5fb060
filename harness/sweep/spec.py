"""The ablation spec: ``ablations/<study>.yaml`` -> a validated :class:`StudySpec`.

Format (docs/study-spec.md)::

    study: block_type            # required; a plain name (letters, digits, _ - .)
    description: ...
    base: {train: {steps: 300}}  # RunConfig overrides shared by every run
    grid: {model.compressor.block: [bi_ssm, conv]}       # cartesian product of the axes
    zip:  {a.b: [1, 2], c.d: [3, 4]}                      # paired axes, crossed with the grid
    compressors: {bi_ssm: {name: mambamia_v2, spatial: {n_layers: 1}}}  # study-local compressor names
    seeds: [0, 1, 2]
    suites: [mia_long, mia_dense]                         # eval.tasks
    profile: local                                        # slurm/<profile>.yaml
    labels: {model.compressor.block: block}               # short axis names (default: last path part)
    report: {x: block, figures: [...], compare: [[a, b]], claims: [{says, better, worse}]}  # to the report

:func:`load_spec` reads the file with :class:`harness.yamlio.StrictLoader` (a safe loader: no object
construction; a repeated key is an error; ``1e-3`` is a number; a non-UTF-8 byte is named with its
line), applies command-line ``--set`` overrides (:mod:`harness.overrides` reads their values) and checks
everything that can be checked without running: unknown keys (with a "did you mean"), wrong types, empty
axes, zip axes of different lengths, axis paths that are not RunConfig fields, every axis value against
the model's own validation, and the ``report:`` section (figure kinds, compare pairs against the x axis's
values). All problems are collected and raised together as one :class:`SpecError`, each line naming the
file and the key path. The run count is checked by the planner (:func:`harness.sweep.plan.check_size`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import UNHASHED_FIELDS, ConfigError, RunConfig, build, deep_merge, set_by_path
from harness.data.synthetic import FAMILIES, GROUPS
from harness.lmms_tasks import check_lmms_task
from harness.model.registry import build_config, get_entry
from harness.overrides import OverrideError, check_config_path
from harness.overrides import parse_override as _parse_override
from harness.store import safe_name
from harness.sweep.problems import (
    Problem,
    apply_each,
    clean_config,
    close_match,
    describe,
    file_text,
    in_file_order,
    names_x_values,
)
from harness.sweep.report_check import check_report
from harness.yamlio import YamlFileError, load_yaml_file

TOP_KEYS = ("study", "description", "base", "compressors", "grid", "zip", "seeds", "suites", "profile", "labels",
            "report")


class SpecError(ValueError):
    """One or more problems in a study spec; ``problems`` are ``(key path, message)`` pairs, or
    :class:`~harness.sweep.problems.Problem` (a pair that also names its cause, ``--set`` and line)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        lines = [describe(p, source) for p in problems]
        n_follow = sum(1 for p in problems if getattr(p, "cause", None))
        follow = f" ({n_follow} follow from an earlier one)" if n_follow else ""
        head = (f"{len(problems)} problem(s) in the study spec{follow}; nothing was run:\n"
                if len(problems) > 1 else "")
        super().__init__(head + "\n".join(lines))


def _did_you_mean(key: str, known: typing.Iterable[str]) -> str:
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


# ---------------------------------------------------------------------------------------------- spec
@dataclass
class Axis:
    """One varied RunConfig field. ``kind`` is ``grid`` (cartesian) or ``zip`` (paired)."""

    path: str
    label: str
    values: list[Any]
    kind: str


@dataclass
class StudySpec:
    """A validated study. ``variants()`` yields ``{dotted path: value}`` for every grid x zip point."""

    study: str
    source: str  # the spec file, with the --set overrides (for messages)
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zip: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    suites: list[str] | None = None
    profile: str = "local"
    labels: dict[str, str] = field(default_factory=dict)  # dotted path -> label (every axis)
    report: dict[str, Any] = field(default_factory=dict)
    # study-local compressor names: ``model.compressor.name: bi_ssm`` in an axis or the base means this
    # registry entry with these fields (laid over the base's compressor keys)
    compressors: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # the --set strings applied
    path: str = ""  # the spec file as given

    @property
    def axes(self) -> list[Axis]:
        return ([Axis(p, self.labels[p], v, "grid") for p, v in self.grid.items()]
                + [Axis(p, self.labels[p], v, "zip") for p, v in self.zip.items()])

    @property
    def n_variants(self) -> int:
        n = 1
        for v in self.grid.values():
            n *= len(v)
        if self.zip:
            n *= len(next(iter(self.zip.values())))
        return n

    def variants(self) -> Iterator[dict[str, Any]]:
        """Every grid point crossed with every zip row, in file order (grid axes vary slowest)."""
        zrows: list[dict[str, Any]] = [dict(zip(self.zip, row)) for row in zip(*self.zip.values())] or [{}]
        for point in itertools.product(*self.grid.values()):
            g = dict(zip(self.grid, point))
            for z in zrows:
                yield {**g, **z}

    def run_overrides(self, variant: dict[str, Any]) -> dict[str, Any]:
        """The RunConfig override dict of one variant (seed not set): base, then suites, then the axes."""
        d = copy.deepcopy(self.base)
        if self.suites is not None:
            set_by_path(d, "eval.tasks", list(self.suites))
        for path, value in variant.items():
            _set_value(d, path, value)
        return resolve_compressor(d, self.compressors)

    def index_meta(self) -> dict[str, Any]:
        """What the study index stores besides the runs (see docs/study-spec.md)."""
        report = dict(self.report)
        x = report.get("x")
        if isinstance(report.get("compare"), list) and x in self.labels.values():
            # --set may have narrowed the x axis: keep the comparisons whose two values are still in it
            vals = {str(v) for a in self.axes if a.label == x for v in a.values}
            report["compare"] = [c for c in report["compare"]
                                 if isinstance(c, list) and all(str(v) in vals for v in c)]
        if isinstance(report.get("claims"), list) and x in self.labels.values():
            vals = {str(v) for a in self.axes if a.label == x for v in a.values}
            report["claims"] = [c for c in report["claims"]
                                if isinstance(c, dict) and {str(c.get("better")), str(c.get("worse"))} <= vals]
        return {"description": self.description, "spec_path": self.path or self.source,
                "axes": {a.label: a.path for a in self.axes}, "report": report,
                "seeds": list(self.seeds), "overrides": list(self.overrides)}


def _set_value(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in an override dict; a mapping value on a config node is merged into it."""
    cur: Any = d
    parts = path.split(".")
    for k in parts[:-1]:
        cur = cur.get(k) if isinstance(cur, dict) else None
        if cur is None:
            break
    old = cur.get(parts[-1]) if isinstance(cur, dict) else None
    if isinstance(value, dict) and isinstance(old, dict):
        value = deep_merge(old, value)
    set_by_path(d, path, copy.deepcopy(value))


def resolve_compressor(d: dict[str, Any], compressors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An override dict whose ``model.compressor.name`` is a study-local name: that name's fields (with its
    registry ``name``) laid over the rest of the compressor keys. Other dicts are returned as they are."""
    comp = (d.get("model") or {}).get("compressor") if isinstance(d.get("model"), dict) else None
    if not isinstance(comp, dict) or comp.get("name") not in compressors:
        return d
    local = compressors[comp["name"]]
    rest = {k: v for k, v in comp.items() if k != "name"}
    d["model"]["compressor"] = deep_merge(rest, copy.deepcopy(local))
    return d


def variant_label(variant: dict[str, Any], labels: dict[str, str]) -> str:
    """``"block=bi_ssm, period=8"`` (mapping values as compact JSON)."""
    def fmt(v: Any) -> str:
        return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)
    return ", ".join(f"{labels[p]}={fmt(v)}" for p, v in variant.items())


# ------------------------------------------------------------------------------------------- --set
def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=200"`` -> ``("train.steps", 200)`` (:func:`harness.overrides.parse_override`: the
    value is YAML, ``1e-3`` a number); a malformed one raises :class:`SpecError` naming it."""
    try:
        return _parse_override(text)
    except OverrideError as e:
        raise SpecError(f"--set {text!r}", [(e.path, e.message)]) from None


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` strings to a raw spec dict (returns a new dict).

    ``seeds=[0]``, ``suites=[mia_long]``, ``profile=x``, ``study=x``, ``description=x`` replace the spec
    key; ``grid.<path>=[...]`` / ``zip.<path>=[...]`` replace an axis; ``labels.<path>=x``,
    ``report.<key>=x`` and ``base.<path>=v`` set inside those sections. Any other key is a RunConfig
    path (``train.steps=200``): it goes into ``base``, and if it is a grid axis the axis is pinned to that
    one value (a zip axis keeps only the rows with that value).
    """
    doc = copy.deepcopy(doc)
    for text in overrides:
        key, value = parse_override(text)
        head, _, rest = key.partition(".")
        if head in ("seeds", "suites", "profile", "study", "description") and not rest:
            doc[head] = value
        elif head in ("grid", "zip", "labels") and rest:
            sec = doc.setdefault(head, {}) or {}
            if not isinstance(sec, dict):
                raise SpecError("--set", [(key, f"{head!r} in the spec is not a mapping")])
            sec[rest] = value
            doc[head] = sec
        elif head in ("report", "base", "compressors") and rest:
            sec = doc.setdefault(head, {}) or {}
            if not isinstance(sec, dict):
                raise SpecError("--set", [(key, f"{head!r} in the spec is not a mapping")])
            set_by_path(sec, rest, value)
            doc[head] = sec
        else:
            if head not in {f.name for f in dataclasses.fields(RunConfig)}:
                known = [*TOP_KEYS, *(f.name for f in dataclasses.fields(RunConfig))]
                raise SpecError(f"--set {text!r}", [(key, f"unknown key {head!r}{_did_you_mean(head, known)}; a "
                                                     "--set key is a RunConfig path (train.steps) or a spec key "
                                                     "(seeds, grid.<path>)")])
            try:
                check_config_path(key)
            except ConfigError as e:
                raise SpecError(f"--set {text!r}", [(key, e.message)]) from None
            grid, zp = doc.get("grid") or {}, doc.get("zip") or {}
            if isinstance(grid, dict) and key in grid:
                grid[key] = [value]
            elif isinstance(zp, dict) and key in zp and isinstance(zp[key], list):
                keep = [i for i, v in enumerate(zp[key]) if v == value]
                if not keep:
                    raise SpecError("--set", [(key, f"{value!r} is not one of the zip values {zp[key]}")])
                for p in list(zp):
                    if isinstance(zp[p], list):
                        zp[p] = [zp[p][i] for i in keep if i < len(zp[p])]
            else:
                base = doc.setdefault("base", {}) or {}
                if not isinstance(base, dict):
                    raise SpecError("--set", [("base", "is not a mapping")])
                set_by_path(base, key, value)
                doc["base"] = base
    return doc


# ---------------------------------------------------------------------------------------- validation
def check_native_task(task: str) -> str | None:
    """Why the native scorer would refuse eval task ``task`` (``mia_long``, ``mia_<family>``, ``mia_all``),
    or None. Mirrors ``harness.evaluate.task_families`` without importing torch."""
    name = task[4:] if task.startswith("mia_") else task
    if name == "all" or name in GROUPS or name in FAMILIES:
        return None
    known = ["mia_all"] + [f"mia_{g}" for g in GROUPS] + [f"mia_{f}" for f in FAMILIES]
    return f"unknown task {task!r}{_did_you_mean(task, known)}; known: {', '.join(known)}"


def _default_labels(paths: list[str]) -> dict[str, str]:
    """Last path part, or as many trailing parts as needed to tell two axes apart."""
    out: dict[str, str] = {}
    for p in paths:
        parts = p.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            clash = [q for q in paths if q != p and ".".join(q.split(".")[-n:]) == cand]
            if not clash:
                break
        out[p] = cand
    return out


def validate(doc: Any, source: str, overrides: list[str] | None = None, original: Any = None) -> StudySpec:
    """Check a raw spec dict; raise :class:`SpecError` listing every problem found. ``original``: the
    spec before ``--set`` (a compare pair may name a value that ``--set`` has narrowed away)."""
    probs: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        raise SpecError(source, [("", f"the spec must be a mapping, got {type(doc).__name__}")])
    for k in doc:
        if k not in TOP_KEYS:
            probs.append((str(k), f"unknown key{_did_you_mean(str(k), TOP_KEYS)}; known keys: {', '.join(TOP_KEYS)}"))

    study = doc.get("study")
    if not isinstance(study, str) or not study:
        probs.append(("study", "required: the study name (a string)"))
        study = "study"
    else:
        try:
            safe_name(study, "study name")
        except ValueError as e:
            probs.append(("study", str(e)))
    description = doc.get("description") or ""
    if not isinstance(description, str):
        probs.append(("description", f"expected a string, got {type(description).__name__}"))
        description = ""

    compressors = doc.get("compressors") or {}
    if not isinstance(compressors, dict):
        probs.append(("compressors", "expected a mapping of name -> compressor config, got "
                      f"{type(compressors).__name__}"))
        compressors = {}
    for cname, cdef in list(compressors.items()):
        kp = f"compressors.{cname}"
        if not isinstance(cdef, dict) or not isinstance(cdef.get("name"), str):
            probs.append((kp, "expected a compressor config mapping with `name:` (a registry entry or preset)"))
            compressors.pop(cname)
            continue
        if cdef["name"] in compressors:
            probs.append((f"{kp}.name", f"{cdef['name']!r} is itself a study-local name; name a registry entry"))
            compressors.pop(cname)
            continue
        try:
            get_entry(cname)
            probs.append((kp, f"{cname!r} is a registry name already (harness.model.registry); pick another"))
            compressors.pop(cname)
            continue
        except ConfigError:
            pass
        try:
            build_config(cdef)
        except ConfigError as e:
            probs.append((f"{kp}.{e.path.removeprefix('model.compressor.')}", e.message))
            compressors.pop(cname)

    base = doc.get("base") or {}
    clean_base, base_builds = base, True  # base without the keys refused (the axes are checked against it)
    if not isinstance(base, dict):
        probs.append(("base", f"expected a mapping of RunConfig overrides, got {type(base).__name__}"))
        base = clean_base = {}
    else:
        if "seed" in base:
            probs.append(("base.seed", "set seeds with the top-level `seeds:` list"))
        base_probs, clean_base, base_builds = clean_config(  # every problem, not the first
            RunConfig, resolve_compressor(copy.deepcopy(base), compressors))
        probs += [(f"base.{path}", msg) for path, msg in base_probs]

    seeds = doc.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        probs.append(("seeds", f"expected a non-empty list of integers, got {seeds!r}"))
        seeds = [0]
    else:
        for i, s in enumerate(seeds):
            if isinstance(s, bool) or not isinstance(s, int):
                probs.append((f"seeds[{i}]", f"expected an integer, got {type(s).__name__} {s!r}"))
        if len(set(map(repr, seeds))) != len(seeds):
            probs.append(("seeds", f"repeated seeds in {seeds}"))

    suites = doc.get("suites")
    if suites is not None:
        if not isinstance(suites, list) or not suites or not all(isinstance(s, str) and s for s in suites):
            probs.append(("suites", f"expected a non-empty list of task/group names, got {suites!r}"))
            suites = None
        elif "eval" in base and isinstance(base["eval"], dict) and "tasks" in base["eval"]:
            probs.append(("suites", "both `suites:` and `base.eval.tasks` are set; keep one"))

    if suites is not None and base_builds:
        ev = (base.get("eval") or {}) if isinstance(base.get("eval"), dict) else {}
        backend = ev.get("backend", "native")
        for i, t in enumerate(suites):
            if backend == "native":
                msg = check_native_task(t)
            else:  # lmms-eval's own task manager decides (mia_* in generate mode: their *_gen variants)
                gen = ev.get("mode") == "generate" and t.startswith("mia_") and not t.endswith("_gen")
                msg = check_lmms_task(f"{t}_gen" if gen else t)
            if msg:
                probs.append((f"suites[{i}]", msg))

    profile = doc.get("profile", "local")
    if not isinstance(profile, str) or not profile:
        probs.append(("profile", f"expected a profile name (slurm/<name>.yaml), got {profile!r}"))
        profile = "local"

    axes: dict[str, dict[str, list[Any]]] = {}
    broken: dict[str, str] = {}  # axis path that is refused -> its problem's key path (what others follow from)
    for kind in ("grid", "zip"):
        sec = doc.get(kind)
        axes[kind] = {}
        if sec is None:
            continue
        if not isinstance(sec, dict):
            probs.append((kind, f"expected a mapping of dotted RunConfig paths to value lists, got "
                                f"{type(sec).__name__}"))
            continue
        if not sec:
            probs.append((kind, "is empty: list at least one axis (path: [values]) or remove the key"))
        for path, values in sec.items():
            kp = f"{kind}.{path}"
            if not isinstance(path, str):
                probs.append((kp, "axis keys must be dotted RunConfig paths (strings)"))
                continue
            if path == "seed":
                probs.append((kp, "vary seeds with the top-level `seeds:` list"))
                continue
            try:
                check_config_path(path)
            except ConfigError as e:
                probs.append((kp, e.message))
                broken[path] = kp
                continue
            if not isinstance(values, list):
                probs.append((kp, f"expected a list of values, got {type(values).__name__} {values!r}"))
                broken[path] = kp
                continue
            if not values:
                probs.append((kp, "empty list of values: an axis needs at least one"))
                broken[path] = kp
                continue
            if path in UNHASHED_FIELDS:
                probs.append((kp, "is where a run reports or how it executes, not what it computes (left out "
                                  f"of the run id): set it in `base:` or with --set {path}=..., not as an axis"))
                continue
            axes[kind][path] = values
    grid, zp = axes["grid"], axes["zip"]
    if zp:
        lens = {p: len(v) for p, v in zp.items()}
        if len(set(lens.values())) > 1:
            probs.append(("zip", "paired axes must have the same length, got "
                                 + ", ".join(f"{p}: {n}" for p, n in lens.items())))
    all_paths = [*grid, *zp]
    for p in grid:
        if p in zp:
            probs.append((f"zip.{p}", "is also a grid axis; an axis is either grid or zip"))
    for p in all_paths:
        for q in all_paths:
            if p != q and q.startswith(p + "."):
                probs.append((f"{'grid' if q in grid else 'zip'}.{q}", f"is inside axis {p!r}; axes must not nest"))
        if p == "eval.tasks" and suites is not None:
            probs.append((p, "is an axis and `suites:` is set; keep one"))

    # every axis value against the model's validation (base, less its refused keys, + that one value)
    if base_builds:
        for kind, sec in (("grid", grid), ("zip", zp)):
            for path, values in sec.items():
                for i, v in enumerate(values):
                    d = copy.deepcopy(clean_base)
                    if path == "model.visual_tokens":  # whether each compressor meets it: the plan, per variant
                        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                            probs.append((f"{kind}.{path}[{i}]", f"a token budget must be a positive integer "
                                          f"(LLM visual tokens per video), got {v!r}"))
                        continue
                    try:
                        _set_value(d, path, v)
                        if kind == "zip" and len({len(x) for x in zp.values()}) == 1:
                            for q, vals in zp.items():  # a zip value is checked with the rest of its row
                                if q != path and q != "model.visual_tokens":
                                    _set_value(d, q, vals[i])
                        build(RunConfig, resolve_compressor(d, compressors))
                    except ConfigError as e:
                        where = f" (at {e.path})" if e.path != path else ""
                        probs.append((f"{kind}.{path}[{i}]", f"{e.message}{where}"))

    labels_in = doc.get("labels") or {}
    labels = _default_labels(all_paths)
    # the labels a refused axis would have had: labels and report entries that use them follow from it
    broken_labels = {lab: kp for p, kp in broken.items() for lab in _default_labels([p]).values()}
    if not isinstance(labels_in, dict):
        probs.append(("labels", f"expected a mapping of axis path -> short name, got {type(labels_in).__name__}"))
    else:
        for p, lab in labels_in.items():
            if p not in all_paths:
                cause = broken.get(close_match(str(p), broken) or "")
                if cause and isinstance(lab, str):
                    broken_labels[lab] = cause
                hint = "" if cause else _did_you_mean(str(p), all_paths)  # not another axis: its own is refused
                probs.append(Problem(f"labels.{p}", f"not an axis of the study{hint}; "
                                                    f"axes: {', '.join(all_paths) or 'none'}", cause=cause))
            elif not isinstance(lab, str) or not lab:
                probs.append((f"labels.{p}", f"expected a non-empty string, got {lab!r}"))
            else:
                labels[p] = lab
        seen: dict[str, str] = {}
        for p, lab in labels.items():
            if lab in seen:
                probs.append(("labels", f"axes {seen[lab]!r} and {p!r} have the same label {lab!r}"))
            seen[lab] = p

    report = doc.get("report") or {}
    if not isinstance(report, dict):
        probs.append(("report", f"expected a mapping, got {type(report).__name__}"))
        report = {}
    else:
        # the report's x axis is a refused one: its values and comparisons follow from that axis's problem
        x_bad = "x" in report and report["x"] not in labels.values()
        x_cause = (broken_labels.get(str(report.get("x"))) if x_bad else None) or (
            next(iter(broken.values()), None) if broken and not all_paths else None)
        if x_bad:
            probs.append(Problem("report.x", f"{report['x']!r} is not an axis label"
                                             f"{_did_you_mean(str(report['x']), labels.values())}; labels: "
                                             f"{', '.join(labels.values()) or 'none'}", cause=x_cause))
        values = {labels[p]: list(v) for p, v in [*grid.items(), *zp.items()] if p in labels}
        if isinstance(original, dict):
            for kind in ("grid", "zip"):
                sec = original.get(kind)
                for p, v in (sec.items() if isinstance(sec, dict) else ()):
                    if p in labels and isinstance(v, list):
                        values.setdefault(labels[p], []).extend(v)
        # with a refused report.x the values are checked against another axis: they follow from report.x
        value_cause = x_cause or ("report.x" if x_bad else None)
        probs += [Problem(pth, msg, cause=value_cause) if value_cause and names_x_values(pth) else (pth, msg)
                  for pth, msg in check_report(report, labels, values)]

    if probs:
        raise SpecError(source, probs)
    spec = StudySpec(study=study, source=source, description=description, base=base, grid=grid, zip=zp,
                     seeds=list(seeds), suites=list(suites) if suites is not None else None, profile=profile,
                     labels=labels, report=report, compressors=dict(compressors), overrides=list(overrides or []))
    if spec.n_variants == 0:
        raise SpecError(source, [("grid", "the study has no variants")])
    return spec


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read and validate ``path`` (YAML, safe loader) with ``--set`` ``overrides`` applied."""
    p = Path(path)
    source = str(path)
    if not p.is_file():
        raise SpecError(source, [("", "no such file")])
    try:
        doc = load_yaml_file(p)
    except YamlFileError as e:
        raise SpecError(source, [("", str(e).removeprefix(f"{source}: "))]) from None
    if doc is None:
        raise SpecError(source, [("", "the file is empty")])
    original = doc
    set_probs: list[Problem] = []
    if overrides:
        if not isinstance(doc, dict):
            raise SpecError(source, [("", "the spec must be a mapping")])
        doc, set_probs = apply_each(apply_overrides, SpecError, doc, overrides)  # every bad --set, not the first
        source = f"{source} (with --set {' '.join(overrides)})"
    try:
        spec = validate(doc, source, overrides, original)
    except SpecError as e:
        raise SpecError(e.source, in_file_order([*set_probs, *e.problems], file_text(p))) from None
    if set_probs:
        raise SpecError(source, set_probs)
    spec.path = str(path)
    return spec
