"""One sweep job: train + evaluate one run and write its record to the results store.

:func:`run_job` is what every executor runs (in a submitit local process, a Slurm array task, or the
driver itself with ``--executor debug``). It

1. limits torch/BLAS threads to the job's ``cpus`` (so parallel local jobs share the cores);
2. writes a ``running`` record naming the job (host, pid, Slurm job id) so a rerun knows whether the
   run is still alive or must be resumed;
3. opens the run's trackers (``train.report_to``, :mod:`harness.trackers`: continued from
   ``run_dir/trackers.json`` on a resumed run; a broken one is a warning) and calls the job body, by
   default :func:`train_and_evaluate` (``harness.train.train_run`` then ``harness.evaluate.evaluate_run``;
   training resumes from ``run_dir/checkpoint.pt``);
4. writes the ``done`` record (metrics, tokens, extra, git commit, package versions, wall time), or on
   any exception a ``failed`` record with the reason and the log path (the traceback is in
   ``run_dir/error.txt``). A full disk (``ENOSPC``, or torch's cryptic writer error when the file system
   has no room left) is named as such with the path and its free space; the run's temporary files
   (``*.tmp<pid>`` checkpoints, export folders) are removed first, so the record fits. The trackers then
   get the record's final metrics (the store is the source of truth) and are closed.

Every execution appends one line to ``run_dir/attempts.jsonl`` (attempt, host, pid, start time): the
history of who ran the run, one line per execution. A local job dies with its submitit controller
(``PR_SET_PDEATHSIG``), which dies with the driver: no worker outlives a killed sweep.

:class:`SweepJob` is the same as a ``submitit.helpers.Checkpointable`` callable: when Slurm preempts
or times out the job, submitit requeues it with the same arguments and the training resumes from the
run's checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import gc
import importlib
import inspect
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import submitit
import torch
import torch.distributed as dist

from harness import trackers
from harness.config import RunConfig, build
from harness.store import ResultsStore, file_mode, safe_name
from harness.sweep.controller import die_with_parent
from harness.sweep.plan import proc_stat

DEFAULT_BODY = "harness.sweep.job:train_and_evaluate"
VERSION_PACKAGES = ("torch", "transformers", "numpy", "submitit", "lmms_eval", "mambamia-harness")


@dataclass
class JobSpec:
    """Everything a job needs; plain data so that it pickles to any worker."""

    run_id: str
    study: str
    seed: int
    label: str
    config: dict[str, Any]  # the resolved RunConfig
    store_root: str
    run_dir: str
    git_commit: str = "unknown"
    cpus: int = 1
    executor: str = "local"
    body: str = DEFAULT_BODY  # "module:function" (cfg: RunConfig, run_dir: Path) -> eval dict
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the job
    progress: bool = False  # progress bars inside the job (the debug executor shows them)
    identity: dict[str, Any] = field(default_factory=dict)  # harness.identity.run_identity, into the record
    parent: str = ""  # evaluation-only: the run id whose checkpoint (a sibling of run_dir) it scores

    @property
    def parent_dir(self) -> Path | None:
        return Path(self.run_dir).parent / self.parent if self.parent else None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the harness checkout (``+dirty`` with local changes); ``unknown``."""
    cwd = Path(cwd or Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def set_threads(n: int) -> None:
    """Limit intra-op threads of torch and BLAS to ``n`` (call before heavy work)."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set in this process (debug executor)
        torch.set_num_interop_threads(max(1, min(n, 2)))


def device_name() -> str:
    """What the run's costs were measured on: the GPU's name, else ``cpu`` (the report warns when a
    table's latencies come from different devices)."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _job_info(executor: str) -> dict[str, Any]:
    info: dict[str, Any] = {"executor": executor, "host": socket.gethostname(), "pid": os.getpid(),
                            "device": device_name()}
    stat = proc_stat(os.getpid())
    if stat is not None:
        info["pid_start"] = stat[1]  # tells this process from a later one with the same pid
    try:
        env = submitit.JobEnvironment()
        info["job_id"] = env.job_id
        info["log_out"] = str(env.paths.stdout).replace("%j", env.job_id).replace("%t", str(env.global_rank))
        info["log_err"] = str(env.paths.stderr).replace("%j", env.job_id).replace("%t", str(env.global_rank))
    except RuntimeError:  # not inside a submitit job
        pass
    return info


def load_body(body: str) -> Any:
    """``"pkg.module:function"`` -> the function."""
    mod, _, fn = body.partition(":")
    if not mod or not fn:
        raise ValueError(f"job body {body!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


def task_rank() -> tuple[int, int]:
    """(global rank, number of tasks) of this process in its submitit job; (0, 1) outside one."""
    try:
        env = submitit.JobEnvironment()
        return env.global_rank, env.num_tasks
    except RuntimeError:  # not inside a submitit job
        return 0, 1


def train_and_evaluate(cfg: Any, run_dir: Path, progress: bool = False, parent_dir: Path | None = None
                       ) -> dict[str, Any]:
    """The default body: ``train_run`` (resumes from ``run_dir/checkpoint.pt``), then ``evaluate_run``.
    Returns evaluate_run's ``{"metrics", "tokens", "extra"}`` with the training summary in ``extra.train``.
    In a multi-task job every rank trains; rank 0 alone evaluates (the others return ``{}``).
    ``protocol: probe`` runs harness.probe's fit + score instead. An evaluation-only run (``eval.parent``)
    trains nothing: it scores ``parent_dir``'s checkpoint with its own compressor swapped in."""
    # The body's imports stay lazy: the sweep controller imports this module (JobSpec), and the model stack
    # with transformers would cost its `--help` seconds.
    if getattr(cfg.eval, "parent", ""):
        from harness.evaluate import evaluate_run  # lazy: heavy (see above)

        if parent_dir is None:
            raise ValueError(f"{run_dir}: an evaluation-only run (eval.parent={cfg.eval.parent}) needs its "
                             "parent's run directory")
        out = dict(evaluate_run(cfg, run_dir, progress=progress, checkpoint=parent_dir) or {})
        out.setdefault("extra", {})["parent_run"] = Path(parent_dir).name
        return out
    if getattr(cfg, "protocol", "lmm") == "probe":
        from harness.probe import train_and_evaluate as probe_train_and_evaluate  # lazy: heavy (see above)

        return probe_train_and_evaluate(cfg, run_dir, progress=progress)
    from harness.evaluate import evaluate_run  # lazy: heavy (see above)
    from harness.train import train_run  # lazy: heavy (see above)

    train_info = train_run(cfg, run_dir, progress=progress) or {}
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return {}
    out = dict(evaluate_run(cfg, run_dir, progress=progress) or {})
    extra = dict(out.get("extra") or {})
    for k, v in train_info.items():
        if isinstance(v, (int, float, str, bool)) and f"train_{k}" not in extra:
            extra[f"train_{k}"] = v
    out["extra"] = extra
    return out


_TRAIN_TMP = re.compile(r"\.tmp\d+$")  # harness.train's `<file>.tmp<pid>`
# Rust's tempfile crate (HF tokenizers' atomic save of tokenizer.json): `.tmp` + 6 random characters
_RUST_TMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Remove the temporary files a killed or failed writer leaves in its run dir: ``<file>.tmp<pid>``
    (checkpoints, weights), ``.<name>.export.*`` folders (model exports), the store's ``.*.tmp`` and
    ``.tmpXXXXXX`` (the tokenizers library's atomic save).
    Only the run's owner calls this (the driver holds the run's lock), so none of them is live."""
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        for d in list(dirnames):
            if d.startswith(".") and ".export." in d:
                shutil.rmtree(os.path.join(dirpath, d), ignore_errors=True)
                removed.append(Path(dirpath, d))
                dirnames.remove(d)
        for f in filenames:
            if _TRAIN_TMP.search(f) or _RUST_TMP.match(f) or (f.startswith(".") and f.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, f))
                    removed.append(Path(dirpath, f))
    return removed


def _mount_of(path: Path) -> Path:
    p = path.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def disk_full(exc: BaseException | None, path: str | os.PathLike) -> bool:
    """Whether ``exc`` (or its cause) is a full disk or quota, or ``path``'s file system is (nearly) full
    now: torch.save reports ENOSPC as ``RuntimeError: ... unexpected pos``, naming neither."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    try:
        du = shutil.disk_usage(path)
    except OSError:
        return False
    return du.free < max(1 << 20, du.total // 200)


def describe_io_failure(exc: BaseException, path: str | os.PathLike) -> str:
    """One line for an I/O failure near ``path``: what, where, how much room is left."""
    base = f"{type(exc).__name__}: {exc}".strip()
    if not disk_full(exc, path):
        return base
    p = Path(path)
    try:
        du = shutil.disk_usage(p)
        room = f"{_size(du.free)} free of {_size(du.total)}"
    except OSError:
        room = "free space unknown"
    return f"disk full: no space left on {_mount_of(p)} (writing under {p}; {room}) | {base}"


def _record_attempt(run_dir: Path, info: dict[str, Any]) -> None:
    """Append this execution to ``run_dir/attempts.jsonl`` (one small O_APPEND write)."""
    line = json.dumps({k: info.get(k) for k in ("attempt", "host", "pid", "executor", "job_id")} | {"started": now()})
    with contextlib.suppress(OSError):
        fd = os.open(run_dir / "attempts.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode())
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _tie_to_controller(job: JobSpec) -> None:
    """A local job dies with its submitit controller (which dies with the driver)."""
    if job.executor != "local" or not os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        return
    die_with_parent(signal.SIGKILL)


def run_job(job: JobSpec, reraise: bool = False) -> dict[str, Any]:
    """Run one job; returns the final record (``done`` or ``failed``). Never raises unless ``reraise``
    (the debug executor's ``--pdb``), and even then the ``failed`` record is written first."""
    os.environ.update(job.env)
    _tie_to_controller(job)
    rank, n_tasks = task_rank()
    if n_tasks > 1:  # profile tasks_per_node > 1: one process per GPU, torch.distributed over env://
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if rank != 0:
            return _worker_rank(job)
    store = ResultsStore(job.store_root)
    run_dir = Path(job.run_dir)
    safe_name(run_dir.name, "run dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    info = _job_info(job.executor)
    prev = store.read_run(job.run_id) or {}
    if prev.get("status") == "done" and prev.get("config") == job.config and prev.get("identity") == (
            job.identity or None):
        # A requeued attempt of a job that finished during its kill grace: the result stands.
        return prev
    started = now()
    attempts = int((prev.get("job") or {}).get("attempt", 0)) + 1
    info["attempt"] = attempts
    base = {"run_id": job.run_id, "study": job.study, "seed": job.seed, "label": job.label,
            "config": job.config, "git_commit": job.git_commit, "started": started, "job": info,
            "reason": None, "log_path": info.get("log_err")}
    if job.identity:
        base["identity"] = dict(job.identity)
    t0 = time.perf_counter()
    if job.parent:  # evaluation-only: on Slurm it starts when the parent's job ended, which need not be a success
        prec = store.read_run(job.parent) or {}
        if prec.get("status") != "done":
            why = (f"failed: {str(prec.get('reason') or '?')[:500]}" if prec.get("status") == "failed"
                   else f"is {prec.get('status') or 'not recorded'}")
            rec = {**base, "status": "failed", "finished": now(), "wall_time_s": 0.0, "resumable": False,
                   "reason": f"parent run {job.parent} {why}", "parent_failed": job.parent}
            store.write_run(rec)
            return rec
    session: trackers.Session | None = None
    try:
        remove_temp_files(run_dir)  # left by a killed attempt: this job owns the run dir now
        store.write_run({**base, "status": "running", "finished": None, "wall_time_s": None})
        _record_attempt(run_dir, info)
        set_threads(job.cpus)
        cfg = build(RunConfig, job.config)
        # train.report_to: files under <results>/trackers, links in the records; never raises for a tracker
        session = trackers.sweep_session(trackers.TrackerRun(job.run_id, job.study, job.label, job.seed, job.config,
                                                             Path(job.store_root).parent / "trackers", run_dir))
        base.update({"trackers": session.links()} if session else {})
        fn = load_body(job.body)
        params = inspect.signature(fn).parameters
        kw: dict[str, Any] = {"progress": job.progress} if "progress" in params else {}
        if job.parent:
            if "parent_dir" not in params:
                raise TypeError(f"job body {job.body} takes no parent_dir: it cannot run an evaluation-only run")
            kw["parent_dir"] = job.parent_dir
        with trackers.activated(session):
            result = fn(cfg, run_dir, **kw) or {}
        if not isinstance(result, dict):
            raise TypeError(f"job body {job.body} returned {type(result).__name__}, expected a dict")
        rec = {**base, "status": "done", "finished": now(), "wall_time_s": round(time.perf_counter() - t0, 3),
               "versions": package_versions(), "metrics": list(result.get("metrics") or []),
               "tokens": dict(result.get("tokens") or {}), "extra": dict(result.get("extra") or {})}
        for i, m in enumerate(rec["metrics"]):
            if not isinstance(m, dict) or not {"task", "metric", "value"} <= set(m):
                raise ValueError(f"metrics[{i}] = {m!r}: expected {{task, metric, value, n}}")
        store.write_run(rec)
        trackers.close_session(session, rec)  # the final metrics come from the store's record
        return rec
    except Exception as e:  # noqa: BLE001 - every failure becomes a record
        tb = traceback.format_exc()
        full = disk_full(e, run_dir)
        reason = describe_io_failure(e, run_dir) if full else f"{type(e).__name__}: {e}".strip()
        if reraise:
            trackers.close_session(session, _record_failure(job, store, base, info, run_dir, reason, tb, full, t0))
            raise
    # outside the handler: the traceback (and the half-written checkpoint's still-open file, whose room
    # a full disk needs back) is gone by now
    gc.collect()
    rec = _record_failure(job, store, base, info, run_dir, reason, tb, full, t0)
    trackers.close_session(session, rec)
    return rec


def _record_failure(job: JobSpec, store: ResultsStore, base: dict[str, Any], info: dict[str, Any], run_dir: Path,
                    reason: str, tb: str, full: bool, t0: float) -> dict[str, Any]:
    """Remove the run's temp files, write ``error.txt`` and the ``failed`` record (each may fail on a
    full disk: then say so on stdout, the job's log; the driver records the run from the job's result)."""
    removed = remove_temp_files(run_dir)  # frees the room a half-written checkpoint took
    if removed:
        reason += f" | removed {len(removed)} temporary file(s)"
    err: Path | None = run_dir / "error.txt"
    try:
        err.write_text(f"run {job.run_id} ({job.label}, seed {job.seed}) failed at {now()}\n{reason}\n\n{tb}")
    except OSError:
        err = None
    rec = {**base, "status": "failed", "finished": now(), "wall_time_s": round(time.perf_counter() - t0, 3),
           "versions": package_versions(), "reason": reason[:2000],
           "log_path": info.get("log_err") or (str(err) if err else None),
           # not the run's own error: a plain rerun (once there is room) resumes it
           "resumable": full, "extra": {"error_file": str(err) if err else None}}
    try:
        store.write_run(rec)
    except OSError as e2:  # the store's disk is full too: say so; the driver tries again
        print(f"[sweep] run {job.run_id}: could not write its failed record: "
              f"{describe_io_failure(e2, store.root)}", flush=True)
    print(f"[sweep] run {job.run_id} failed: {reason[:500]}\n{tb}", flush=True)
    return rec


def _worker_rank(job: JobSpec) -> dict[str, Any]:
    """A rank > 0 of a multi-task run: trains in step with rank 0 and writes nothing to the store (rank 0
    writes the record; a failure here surfaces there as a failed collective, and in this task's log)."""
    set_threads(job.cpus)
    fn = load_body(job.body)
    fn(build(RunConfig, job.config), Path(job.run_dir))
    return {"run_id": job.run_id, "status": "worker"}


class SweepJob(submitit.helpers.Checkpointable):
    """Slurm-side callable: ``run_job`` that submitit requeues on preemption/timeout (``checkpoint``
    resubmits the same JobSpec; the run resumes from its checkpoint)."""

    def __call__(self, job: JobSpec) -> dict[str, Any]:
        rec = run_job(job)
        return {"run_id": rec["run_id"], "status": rec["status"], "reason": rec.get("reason"),
                "resumable": rec.get("resumable", False)}
