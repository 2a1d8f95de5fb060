"""Planning: a :class:`~harness.sweep.spec.StudySpec` -> the list of runs, their ids and what to do.

A run is one (variant, seed). Its id (:func:`harness.identity.run_id`) hashes its *resolved* RunConfig
(every field, defaults spelled out, canonical JSON with sorted keys) with its identity: the config schema
and behaviour versions, the encoder's identity and the dataset's content hash (:func:`dataset_identity`).
Key order, spelled-out defaults and which study asked for it do not change it; two variants that resolve
to the same config collapse into one run. Each variant is built (and so validated) once; seeds only
change the ``seed`` field, so a 10,000-run plan takes well under 2 s. A grid of more than ``max_runs``
runs (default 10,000) is refused before it is expanded unless ``yes``.

Against the results store every run gets an ``action``:

=============  =================================================================================
``submit``     no record yet
``resume``     a ``running`` record whose job is gone (killed, preempted, driver died; status
               ``interrupted``), or a ``failed`` one marked ``resumable`` (its job was killed from outside:
               a signal, the OOM killer, a node failure, a scheduler cancel or time limit; or a full disk):
               rerun; the training resumes from ``results/runs/<run_id>/checkpoint.pt``, or starts over
               without one. A run killed ``max_attempts`` times (``--max-attempts``, default 3, counted in
               its ``attempts.jsonl``) is ``failed`` instead (:mod:`harness.sweep.attempts`)
``skip``       ``done`` under this id and identity (never rerun, never duplicated)
``stale``      no record under this id, but the study's last plan recorded this (variant, seed) under
               another id (older code, config schema or data), or a record under this id has another
               identity: its result is kept and shown as stale, not rerun (status ``stale``)
``rerun``      ``stale`` and ``--rerun-stale`` given: run again under the current id
``failed``     ``failed`` by its own error (or killed ``max_attempts`` times), ``--retry-failed`` not
               given: reported, not rerun
``retry``      ``failed`` and ``--retry-failed`` given
``running``    a live job (this host's pid, or a Slurm job still in the queue) is on it already
=============  =================================================================================
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.config import ConfigError, DataConfig, EncoderConfig, RunConfig, build, to_dict
from harness.data.datasets import dataset_identity as registry_dataset_identity
from harness.identity import run_id, run_identity, stale_reason, suite_manifest_hash
from harness.model.registry import build_config
from harness.store import ResultsStore
from harness.sweep.attempts import DEFAULT_MAX_ATTEMPTS, kill_action
from harness.sweep.spec import SpecError, StudySpec, variant_label

SUBMIT_ACTIONS = ("submit", "resume", "retry", "rerun")
DEFAULT_MAX_RUNS = 10_000
PENDING = "pending:"  # dataset identity of a suite that does not exist yet (the sweep generates it)


def resolve(overrides: dict[str, Any]) -> dict[str, Any]:
    """Override dict -> the full resolved RunConfig dict, strictly validated by ``build``."""
    return to_dict(build(RunConfig, overrides))


def dataset_identity(data: dict[str, Any]) -> str | None:
    """The content hash of the dataset a run reads (its resolved ``data`` section), or None when the
    dataset does not exist yet. The one place the planner asks; a synthetic suite is identified by its
    manifest (meta.json and the item lists: :func:`harness.identity.suite_manifest_hash`)."""
    if data.get("dataset", "synthetic") != "synthetic":  # a registry dataset: its manifest's content hash
        try:
            return registry_dataset_identity(build(DataConfig, data))
        except FileNotFoundError:  # its annotation files are not here (yet)
            return None
    h = suite_manifest_hash(data["suite"])
    return None if h is None else f"synthetic:{h}"


@dataclass
class PlannedRun:
    run_id: str
    seed: int
    variant: dict[str, Any]  # axis label -> value
    label: str  # "block=bi_ssm, period=8"
    config: dict[str, Any]  # the resolved RunConfig
    identity: dict[str, Any] = field(default_factory=dict)  # harness.identity.run_identity
    status: str = "new"  # new | done | failed | running | interrupted | stale
    action: str = "submit"
    reason: str | None = None
    wall_time_s: float | None = None
    log_path: str | None = None
    previous: str | None = None  # stale: the run id its kept result is stored under
    parent: str | None = None  # evaluation-only: the run id whose checkpoint it scores (planned before it)
    tokens: int | None = None  # predicted LLM visual tokens per video (an upper bound where not exact)
    tokens_exact: bool = True

    def index_entry(self) -> dict[str, Any]:
        """The study index entry: a stale run kept (not rerun) points at its old record, marked."""
        entry = {"run_id": self.run_id, "seed": self.seed, "variant": dict(self.variant), "label": self.label}
        if self.parent:
            entry["parent"] = self.parent
        if self.action == "stale" and self.previous:
            entry.update(run_id=self.previous, current_id=self.run_id, stale=self.reason)
        return entry


@dataclass
class Plan:
    spec: StudySpec
    runs: list[PlannedRun]
    n_duplicates: int = 0  # (variant, seed) points that collapsed into an earlier run
    duplicate_of: dict[str, list[str]] = field(default_factory=dict)  # run_id -> labels that collapsed into it
    pending_suites: list[str] = field(default_factory=list)  # data.suite folders that do not exist yet

    @property
    def to_submit(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.action in SUBMIT_ACTIONS]

    def counts(self) -> Counter:
        return Counter(r.action for r in self.runs)

    def estimate_s(self) -> tuple[float | None, str]:
        """Estimated wall seconds of one submitted run and where the number comes from."""
        done = [r for r in self.runs if r.status in ("done", "stale") and r.wall_time_s]
        if not done:
            return None, "no finished run of this study yet"
        by_label: dict[str, list[float]] = {}
        for r in done:
            by_label.setdefault(r.label, []).append(float(r.wall_time_s or 0))
        steps = {r.run_id: ((r.config.get("train") or {}).get("steps") or 1) for r in self.runs}
        per_step = sum(float(r.wall_time_s or 0) / steps[r.run_id] for r in done) / len(done)
        todo = self.to_submit
        if not todo:
            return 0.0, "nothing to run"
        tot = 0.0
        for r in todo:
            same = by_label.get(r.label)
            tot += sum(same) / len(same) if same else per_step * steps[r.run_id]
        return tot / len(todo), f"from {len(done)} finished run(s) of this study"

    def describe(self, cpus_per_task: int = 1, gpus_per_task: int = 0, parallel: int = 1,
                 max_lines: int = 60, tasks: int = 1) -> str:
        """The plan as text: one line per run (capped at ``max_lines``) and a summary with the cost."""
        c = self.counts()
        lines = [f"study {self.spec.study!r} ({self.spec.source}): {self.spec.n_variants} variant(s) x "
                 f"{len(self.spec.seeds)} seed(s) = {len(self.runs)} run(s)"
                 + (f" ({self.n_duplicates} duplicate point(s) collapsed)" if self.n_duplicates else "")]
        w = max([len(r.label) for r in self.runs[:max_lines]] + [7])
        lines.append(f"  {'run id':<12}  {'variant':<{w}}  seed  tokens  status       action")
        for r in self.runs[:max_lines]:
            note = f"  ({r.reason})" if r.reason and r.action in ("failed", "retry", "stale", "rerun") else ""
            if r.parent:
                note += f"  (evaluation-only: checkpoint of {r.parent})"
            tok = "?" if r.tokens is None else f"{'<=' if not r.tokens_exact else ''}{r.tokens}"
            lines.append(f"  {r.run_id:<12}  {r.label:<{w}}  {r.seed:>4}  {tok:>6}  {r.status:<11}  {r.action}{note}")
        if len(self.runs) > max_lines:
            lines.append(f"  ... {len(self.runs) - max_lines} more run(s) (--show N lists more)")
        parts = [f"{c.get(a, 0)} {a}" for a in ("skip", "submit", "resume", "retry", "rerun", "stale", "failed",
                                                  "running") if c.get(a)]
        lines.append("summary: " + ", ".join(parts) + f"  -> {len(self.to_submit)} run(s) to execute")
        if c.get("failed"):
            lines.append(f"  {c['failed']} failed run(s) are not rerun; pass --retry-failed to retry them")
        if c.get("stale"):
            lines.append(f"  {c['stale']} stale run(s): their results come from older code, config schema or "
                         "data and are kept, marked stale in the report; pass --rerun-stale to rerun them")
        for suite in self.pending_suites:
            lines.append(f"  data.suite {suite} does not exist yet: the sweep generates it before the runs "
                         "start; the run ids above are provisional (an id includes the suite's content hash)")
        est, why = self.estimate_s()
        n = len(self.to_submit)
        if n:
            if est is None:
                lines.append(f"estimated cost: unknown ({why})")
            else:
                waves = -(-n // max(1, parallel))
                cost = f"{n * est * cpus_per_task * tasks / 3600:.2f} core-h"
                if gpus_per_task:
                    cost += f", {n * est * gpus_per_task * tasks / 3600:.2f} GPU-h"
                lines.append(f"estimated cost: ~{est / 60:.1f} min per run, {cost}, ~{waves * est / 60:.1f} min wall "
                             f"at {parallel} in parallel ({why})")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ liveness of jobs
SLURM_ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                       "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"}


def job_alive(job: dict[str, Any] | None) -> bool:
    """Whether the job that wrote a ``running`` record still runs (same host + live pid, or a Slurm job
    still in the queue). Unknown means not alive: the run is resumed, which never duplicates a result."""
    if not job:
        return False
    if job.get("executor") == "slurm" and job.get("job_id"):
        if shutil.which("squeue") is None:
            return False
        try:
            out = subprocess.run(["squeue", "-h", "-j", str(job["job_id"]), "-o", "%T"], capture_output=True,
                                 text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        # COMPLETING (a cancelled job being torn down) is not alive: a rerun right after Ctrl-C resumes it.
        return out.returncode == 0 and bool(set(out.stdout.split()) & SLURM_ACTIVE_STATES)
    pid = job.get("pid")
    if job.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    stat = proc_stat(pid)
    if stat is not None:  # Linux: a zombie is dead; another process with a reused pid started later
        state, start = stat
        return state not in ("Z", "X") and (job.get("pid_start") in (None, start))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks)`` of a Linux process from /proc, or None if unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None if not os.path.isdir("/proc/self") else ("X", -1)
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


# --------------------------------------------------------------------------------------------- planning
def check_size(spec: StudySpec, max_runs: int | None = DEFAULT_MAX_RUNS, yes: bool = False) -> int:
    """The number of (variant, seed) points, from the axis lengths (nothing expanded); raise
    :class:`SpecError` when it is above ``max_runs`` (None or 0: no limit) and ``yes`` is not given."""
    n = spec.n_variants * len(spec.seeds)
    if max_runs and n > max_runs and not yes:
        raise SpecError(spec.source, [("grid", f"{spec.n_variants:,} variant(s) x {len(spec.seeds)} seed(s) = {n:,} "
                                               f"runs, more than --max-runs {max_runs:,}: pass --yes to plan them "
                                               "all, or narrow the grid")])
    return n


def plan_study(spec: StudySpec, store: ResultsStore | None = None, retry_failed: bool = False,
               rerun_stale: bool = False, max_runs: int | None = DEFAULT_MAX_RUNS, yes: bool = False,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Plan:
    """Resolve every (variant, seed) of ``spec``, collapse duplicates and, with a ``store``, decide what
    to do with each run. Raises :class:`SpecError` if a combination of axis values is invalid, or if
    the study has more than ``max_runs`` runs and ``yes`` is not given (checked before expanding)."""
    check_size(spec, max_runs, yes)
    runs: list[PlannedRun] = []
    seen: dict[str, PlannedRun] = {}
    dup_of: dict[str, list[str]] = {}
    n_dup = 0
    problems: list[tuple[str, str]] = []
    pending: list[str] = []
    for variant in spec.variants():
        label = variant_label(variant, spec.labels)
        try:
            resolved = resolve(spec.run_overrides(variant))
        except ConfigError as e:
            problems.append((f"variant {label}", f"{e.path}: {e.message}"))
            if len(problems) >= 20:
                break
            continue
        dataset = dataset_identity(resolved["data"])
        if dataset is None:
            dataset = PENDING + resolved["data"]["suite"]
            if resolved["data"]["suite"] not in pending:
                pending.append(resolved["data"]["suite"])
        ident = run_identity(resolved, dataset)
        vlab = {spec.labels[p]: v for p, v in variant.items()}
        tokens, exact = predicted_tokens(resolved)
        parent = None
        if resolved["eval"].get("parent"):
            parent = build(RunConfig, resolved).parent_config()
            p_vlab, p_label = _parent_variant(spec, variant, resolved)
            p_tokens, p_exact = predicted_tokens(parent)
        for seed in spec.seeds:
            resolved["seed"] = seed
            r_ident = ident
            if parent is not None:  # the parent first, then the child whose identity names it
                parent["seed"] = seed
                pid = run_id(parent, ident)
                if pid not in seen:
                    pr = PlannedRun(pid, seed, p_vlab, p_label, {**parent}, ident, tokens=p_tokens,
                                    tokens_exact=p_exact)
                    seen[pid] = pr
                    runs.append(pr)
                r_ident = {**ident, "parent": pid}
            rid = run_id(resolved, r_ident)
            if rid in seen:
                n_dup += 1
                dup_of.setdefault(rid, []).append(f"{label} seed={seed}")
                continue
            r = PlannedRun(rid, seed, vlab, label, {**resolved}, r_ident, tokens=tokens, tokens_exact=exact,
                           parent=r_ident.get("parent"))
            seen[rid] = r
            runs.append(r)
    if problems:
        raise SpecError(spec.source, problems)
    plan = Plan(spec, runs, n_dup, dup_of, pending)
    if store is not None:
        mark_status(plan, store, retry_failed, rerun_stale, max_attempts)
    return plan


def _frame_grid(resolved: dict[str, Any]) -> tuple[int, int]:
    """(frames T, patches per frame P) of a resolved run config: the input a token budget divides."""
    return int(resolved["data"]["n_frames"]), build(EncoderConfig, resolved["model"]["encoder"]).patches_per_frame


def predicted_tokens(resolved: dict[str, Any]) -> tuple[int | None, bool]:
    """(LLM visual tokens per video the run's compressor passes, whether that is exact) from its config;
    (None, False) where the count needs the data (a pretrained tower whose patch grid is not set)."""
    try:
        cfg = build_config(resolved["model"]["compressor"])
        return cfg.count_tokens(*_frame_grid(resolved)), cfg.exact_count
    except (ConfigError, KeyError, TypeError, ValueError, NotImplementedError):
        return None, False


def _parent_variant(spec: StudySpec, variant: dict[str, Any], resolved: dict[str, Any]
                    ) -> tuple[dict[str, Any], str]:
    """The axis values and label of an evaluation-only run's parent: the compressor axis names the parent's
    compressor, a token-budget axis its own token count, other compressor fields are its own."""
    parent = resolved["eval"]["parent"]
    T, P = _frame_grid(resolved)
    out: dict[str, Any] = {}
    for path, v in variant.items():
        if path == "model.compressor.name":
            v = parent
        elif path == "model.visual_tokens":
            v = T * P
        elif path.startswith("model.compressor.") or path == "eval.parent":
            v = "-"
        out[path] = v
    return {spec.labels[p]: v for p, v in out.items()}, variant_label(out, spec.labels) + " (parent)"


def _previous_ids(store: ResultsStore, study: str) -> dict[tuple[str, Any], str]:
    """(label, seed) -> the run id the study's last index recorded for it ({} without an index)."""
    try:
        index = store.read_study(study)
    except (FileNotFoundError, ValueError):
        return {}
    out = {}
    for e in index.get("runs") or []:
        if isinstance(e, dict) and "run_id" in e:
            out[(str(e.get("label")), e.get("seed"))] = str(e["run_id"])
    return out


def mark_status(plan: Plan, store: ResultsStore, retry_failed: bool = False, rerun_stale: bool = False,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
    """Set ``status`` / ``action`` of every run from its record in ``store`` (see the module docstring;
    ``max_attempts``: how often a run may be killed from outside before the plain rerun leaves it failed)."""
    existing = set(store.run_ids())
    previous = _previous_ids(store, plan.spec.study)
    stale_action = "rerun" if rerun_stale else "stale"
    for r in plan.runs:
        r.previous = None
        if r.run_id not in existing:
            old = previous.get((r.label, r.seed))
            rec = store.read_run(old) if old and old != r.run_id and old in existing else None
            if rec and rec.get("status") == "done":
                r.status, r.action, r.previous = "stale", stale_action, old
                r.reason, r.wall_time_s = stale_reason(rec, r.identity, r.config), rec.get("wall_time_s")
                r.log_path = rec.get("log_path")
            else:
                r.status, r.action, r.reason = "new", "submit", None
            continue
        rec = store.read_run(r.run_id) or {}
        st = rec.get("status")
        r.reason, r.log_path, r.wall_time_s = rec.get("reason"), rec.get("log_path"), rec.get("wall_time_s")
        if st == "done" and rec.get("identity") != r.identity:
            r.status, r.action, r.previous = "stale", stale_action, r.run_id
            r.reason = stale_reason(rec, r.identity, r.config)
        elif st == "done":
            r.status, r.action = "done", "skip"
        elif st == "failed" and rec.get("resumable"):  # killed from outside (signal, OOM, scheduler), disk full
            action, why = kill_action(rec, max_attempts)
            if why:  # killed max_attempts times: left failed, unless --retry-failed
                r.status, r.action, r.reason = "failed", ("retry" if retry_failed else "failed"), why
            else:
                r.status, r.action = "failed", action
        elif st == "failed" and rec.get("parent_failed"):  # never ran: its parent gave no checkpoint
            r.status, r.action = "failed", "retry"  # the executor runs it once the parent is done, or fails it again
        elif st == "failed":
            r.status, r.action = "failed", ("retry" if retry_failed else "failed")
        elif st == "running" and job_alive(rec.get("job")):
            r.status, r.action = "running", "running"
        else:
            r.status, r.action = "interrupted", "resume"
