"""The sweep runner: one study YAML -> every variant trained and evaluated -> tables and plots.

``python -m harness.sweep ablations/block_type.yaml`` (see ``--help`` and docs/sweep.md). From Python::

    from harness.sweep import run_sweep
    res = run_sweep("ablations/block_type.yaml", overrides=["train.steps=20"], results="/tmp/res")

Steps: :mod:`~harness.sweep.spec` (validate the YAML) -> :mod:`~harness.sweep.plan` (run ids, what is
done) -> study index in the store -> :mod:`~harness.sweep.prepare` (suite + feature cache, once) ->
:mod:`~harness.sweep.executors` (local / slurm / debug) running :func:`~harness.sweep.job.run_job` ->
:mod:`~harness.sweep.progress` -> ``harness.report.report_study``.

One driver per study at a time: the driver holds ``<results>/locks/study-<study>.lock``
(:mod:`~harness.sweep.lock`); a second one started on the same results waits for it (it attaches), then
plans and finds the study done. Each run has its own lock too (studies share runs), held by the driver
that runs it (:mod:`~harness.sweep.executors`). Before running, the driver compares the free space under
``<results>`` with what the runs will take (measured on finished runs of the study) and warns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.doctor import EnvironmentProblem, preflight
from harness.store import ResultsStore, clean_temp_files
from harness.sweep.attempts import DEFAULT_MAX_ATTEMPTS
from harness.sweep.executors import EXECUTORS
from harness.sweep.job import DEFAULT_BODY, JobSpec, _size, describe_io_failure, git_commit
from harness.sweep.lock import Heartbeat, Lock, describe_owner
from harness.sweep.plan import DEFAULT_MAX_RUNS, SUBMIT_ACTIONS, mark_status, plan_study
from harness.sweep.prepare import make_missing_suites
from harness.sweep.profiles import load_profile
from harness.sweep.progress import ProgressView
from harness.sweep.spec import load_spec

__all__ = ["SweepResult", "run_sweep"]


@dataclass
class SweepResult:
    study: str
    plan: Any  # harness.sweep.plan.Plan
    counts: dict[str, int] = field(default_factory=dict)  # status -> runs of the study, after the sweep
    report_files: list[Path] = field(default_factory=list)
    report_error: str | None = None
    exit_code: int = 0


def _inside(root: Path, p: Path) -> Path:
    """``p`` resolved, refusing anything outside ``root`` (run dirs come from hashes, but check anyway)."""
    rp, rr = p.resolve(), root.resolve()
    if rr != rp and rr not in rp.parents:
        raise ValueError(f"{p} is outside {root}")
    return p


def write_index(store: ResultsStore, plan: Any) -> None:
    """Write ``studies/<study>.json`` (keeps ``created`` of an earlier index so reports stay identical)."""
    spec = plan.spec
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with contextlib.suppress(FileNotFoundError):
        created = store.read_study(spec.study).get("created") or created
    store.write_study(spec.study, [r.index_entry() for r in plan.runs], {**spec.index_meta(), "created": created})


def dir_bytes(path: Path) -> int:
    """Bytes ``path`` takes on disk (allocated blocks, so sparse files count what they use)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def check_disk(plan: Any, results: Path, runs_root: Path, log: Callable[[str], None]) -> str | None:
    """Warn (returns the warning, also logged) when the runs to execute would not fit in the free space
    under ``results``; the size of a run is the mean of the study's finished run dirs."""
    todo = [r for r in plan.to_submit if not (runs_root / r.run_id / "checkpoint.pt").exists()]
    if not todo:
        return None
    try:
        free = shutil.disk_usage(results).free
    except OSError:
        return None
    done = [runs_root / r.run_id for r in plan.runs if r.status == "done" and (runs_root / r.run_id).is_dir()]
    if done:
        per = sum(dir_bytes(d) for d in done[:20]) / len(done[:20])
        need = per * len(todo)
        if need > free:
            msg = (f"warning: disk: the {len(todo)} run(s) to start need ~{_size(need)} under {results} "
                   f"({_size(per)} each, measured on {len(done[:20])} finished run(s)) but only {_size(free)} "
                   "is free; runs that hit a full disk are recorded failed (disk full)")
            log(msg)
            return msg
        return None
    if free < 1 << 30:
        msg = (f"warning: disk: only {_size(free)} free under {results}; the size of a run is known once one "
               "has finished")
        log(msg)
        return msg
    return None


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM (kill, a scheduler's stop) ends the driver like Ctrl-C: jobs cancelled, locks released."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def run_report(store: ResultsStore, study: str, out_dir: Path, log: Callable[[str], None] = print
               ) -> tuple[list[Path], str | None]:
    """Call ``harness.report.report_study``; returns (files, error message or None)."""
    try:
        from harness.report import report_study  # lazy: heavy (matplotlib); only the end-of-sweep report needs it
    except ImportError as e:
        return [], f"harness.report is not available ({e}); run `python -m harness.report` later"
    try:
        rep = report_study(store, study, out_dir, progress=False)
    except Exception as e:  # noqa: BLE001 - the sweep's results are safe in the store either way
        return [], f"{type(e).__name__}: {e}"
    files = [f for a in rep.artifacts for f in (a.files or [a.path])]
    return files, None


def run_sweep(spec_path: str | os.PathLike, overrides: Sequence[str] = (), *, executor: str | None = None,
              profile: str | None = None, results: str | os.PathLike = "results", log_dir: str | None = None,
              dry_run: bool = False, retry_failed: bool = False, max_parallel: int | None = None,
              report: bool = True, progress: bool = True, pdb: bool = False, body: str | None = None,
              show: int = 60, poll_s: float | None = None, stop_previous: bool = False,
              log: Callable[[str], None] = print, rerun_stale: bool = False, max_runs: int | None = None,
              yes: bool = False, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> SweepResult:
    """Plan, run and report one study (the CLI's body; arguments mirror its flags)."""
    spec = load_spec(spec_path, list(overrides))
    if dry_run:
        return _run_sweep(spec, spec_path, overrides, executor=executor, profile=profile, results=results,
                          log_dir=log_dir, dry_run=True, retry_failed=retry_failed, max_parallel=max_parallel,
                          report=report, progress=progress, pdb=pdb, body=body, show=show, poll_s=poll_s,
                          stop_previous=stop_previous, rerun_stale=rerun_stale, max_runs=max_runs, yes=yes,
                          log=log, max_attempts=max_attempts)
    lock = Lock(Path(results) / "locks" / f"study-{spec.study}.lock", what=f"sweep driver of study {spec.study}")

    def waiting(holder: dict[str, Any] | None) -> None:
        log(f"study {spec.study!r} is being run by {describe_owner(holder)} on these results; waiting for it "
            "to finish, then this one takes what is left (Ctrl-C stops waiting; its runs go on)")

    restore = _sigterm_as_interrupt()
    hb: Heartbeat | None = None
    try:
        lock.wait_acquire(poll_s=min(2.0, poll_s or 2.0), on_wait=waiting)
        hb = Heartbeat()
        hb.add("study", lock)
        return _run_sweep(spec, spec_path, overrides, executor=executor, profile=profile, results=results,
                          log_dir=log_dir, dry_run=False, retry_failed=retry_failed, max_parallel=max_parallel,
                          report=report, progress=progress, pdb=pdb, body=body, show=show, poll_s=poll_s,
                          stop_previous=stop_previous, rerun_stale=rerun_stale, max_runs=max_runs, yes=yes,
                          log=log, max_attempts=max_attempts)
    except KeyboardInterrupt:
        if not lock.held:
            log("\ninterrupted while waiting for the other driver; nothing was run")
            return SweepResult(spec.study, None, exit_code=130)
        raise
    finally:
        if hb is not None:
            hb.close()
        lock.release()
        restore()


def _run_sweep(spec: Any, spec_path: str | os.PathLike, overrides: Sequence[str], *, executor: str | None,
               profile: str | None, results: str | os.PathLike, log_dir: str | None, dry_run: bool,
               retry_failed: bool, max_parallel: int | None, report: bool, progress: bool, pdb: bool,
               body: str | None, show: int, poll_s: float | None, stop_previous: bool, rerun_stale: bool,
               max_runs: int | None, yes: bool, log: Callable[[str], None],
               max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> SweepResult:
    prof = load_profile(profile or spec.profile)
    ex_name = executor or prof.executor
    if ex_name not in EXECUTORS:
        raise ValueError(f"--executor {ex_name!r}: choose one of {', '.join(EXECUTORS)}")
    results = Path(results)
    store = ResultsStore(results / "store")
    runs_root = results / "runs"
    plan_kw: dict[str, Any] = {"retry_failed": retry_failed, "rerun_stale": rerun_stale, "yes": yes,
                               "max_runs": DEFAULT_MAX_RUNS if max_runs is None else max_runs,
                               "max_attempts": max_attempts}
    plan = plan_study(spec, store, **plan_kw)
    if plan.pending_suites and not dry_run:  # a run id includes the suite's content hash: make it first
        make_missing_suites([r.config for r in plan.runs], progress=progress, log=log)
        plan = plan_study(spec, store, **plan_kw)
    logs = Path(log_dir) if log_dir else results / "logs" / spec.study
    ex_kw: dict[str, Any] = {"poll_s": poll_s or (10.0 if ex_name == "slurm" else 1.0), "study": spec.study,
                             "locks_dir": results / "locks", "stop_previous": stop_previous}
    if ex_name == "local":
        ex_kw["max_parallel"] = max_parallel
    elif ex_name == "debug":
        ex_kw["pdb"] = pdb
    ex = EXECUTORS[ex_name](prof, store, logs, **ex_kw)
    log(plan.describe(prof.cpus_per_task, prof.gpus_per_task, ex.parallel, max_lines=show,
                      tasks=prof.tasks_per_node if prof.executor == "slurm" else 1))
    log(f"executor: {ex_name} (profile {profile or spec.profile}, {ex.parallel} at a time, "
        f"{prof.cpus_per_task} cpu(s) per run); results: {results}; logs: {logs}")
    res = SweepResult(spec.study, plan)
    try:
        preflight(lmms_eval=any(r.config.get("eval", {}).get("backend") == "lmms_eval" for r in plan.to_submit),
                  slurm=ex_name == "slurm", results=results)
    except EnvironmentProblem as e:
        if not dry_run:
            raise
        log(f"warning: {e}")
    if dry_run:
        log("dry run: nothing was run or written")
        return res

    for d in (store.runs_dir, store.studies_dir):
        clean_temp_files(d)
    write_index(store, plan)
    check_disk(plan, results, runs_root, log)
    commit = git_commit()
    jobs = []
    # runs a live job of a previous driver is on ("running") are waited for (or stopped: stop_previous)
    for r in [r for r in plan.runs if r.action in (*SUBMIT_ACTIONS, "running")]:
        run_dir = _inside(runs_root, runs_root / r.run_id)
        if r.action == "rerun" and r.previous == r.run_id and run_dir.exists():
            # a stale record under this very id: its checkpoint must not be resumed; keep it aside
            aside = _inside(runs_root, runs_root / f"{r.run_id}.stale-{_dt.datetime.now():%Y%m%dT%H%M%S}")
            run_dir.rename(aside)
            log(f"[sweep] {r.run_id}: stale run folder kept as {aside}")
        jobs.append(JobSpec(run_id=r.run_id, study=spec.study, seed=r.seed, label=r.label, config=r.config,
                            identity=r.identity, parent=r.parent or "",
                            store_root=str(store.root), run_dir=str(run_dir), git_commit=commit,
                            cpus=prof.cpus_per_task, executor=ex_name, body=body or DEFAULT_BODY,
                            progress=ex_name == "debug" and progress))
    if jobs:
        try:
            ex.prepare([j.config for j in jobs], progress=progress)
            view = ProgressView(store, jobs, enabled=progress,
                                n_skipped=sum(1 for r in plan.runs if r.action == "skip"), max_attempts=max_attempts)
            try:
                ex.run(jobs, view)
            finally:
                view.close()
            log(view.summary())
        except KeyboardInterrupt:
            log("\ninterrupted: the submitted jobs were cancelled. Run the same command again to resume "
                "(finished runs are kept, unfinished ones resume from their checkpoint).")
            res.exit_code = 130
            return res
        except OSError as e:  # the driver's own writes (store, logs) on a full or broken disk
            log(f"error: {describe_io_failure(e, results)}\n(the runs' records so far are kept; free the "
                "space and run the same command again to finish the study)")
            res.exit_code = 1
            return res
    else:
        c = plan.counts()
        log("nothing to run: every run of the study is finished"
            + (" or failed by its own error or killed --max-attempts times (--retry-failed reruns the failed "
               "ones)" if c.get("failed") else "")
            + (" or stale (--rerun-stale reruns the stale ones)" if c.get("stale") else ""))

    mark_status(plan, store, retry_failed, rerun_stale, max_attempts)
    res.counts = {}
    for r in plan.runs:
        res.counts[r.status] = res.counts.get(r.status, 0) + 1
    if report:
        out_dir = results / "reports" / spec.study
        res.report_files, res.report_error = run_report(store, spec.study, out_dir, log)
        if res.report_error:
            log(f"report: not written: {res.report_error}")
        else:
            log(f"report: {len(res.report_files)} file(s) in {out_dir} (index: {out_dir / 'index.md'})")
            for f in res.report_files:
                if f.name in ("table_main.md", "findings.md"):
                    log(f.read_text())
    n_bad = sum(v for k, v in res.counts.items() if k != "done")
    res.exit_code = 1 if n_bad or res.report_error else 0
    if n_bad:
        log(f"{n_bad} run(s) of the study are not done: " + ", ".join(f"{v} {k}" for k, v in res.counts.items())
            + (" (--rerun-stale reruns the stale ones)" if res.counts.get("stale") else ""))
    return res
