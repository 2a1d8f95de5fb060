"""Where the jobs run: ``local`` (processes on this machine), ``slurm`` (job arrays), ``debug`` (in process).

All three take the list of :class:`~harness.sweep.job.JobSpec` and a
:class:`~harness.sweep.progress.ProgressView`, and return when every job has ended. Jobs write their
own records; when a job ends without one (killed, out of memory, past its time limit) the executor
writes the ``failed`` record itself, with submitit's reason and the job's log path.

* ``local``: ``submitit.LocalExecutor``, one process per run, at most ``max_parallel`` at once
  (submitit's local executor starts every submitted job immediately, so the driver submits a new one
  only when a slot frees up). Logs: ``<log_dir>/<job id>_0_log.{out,err}``.
* ``slurm``: ``submitit.SlurmExecutor``, the data preparation as one job, then all runs as one job
  array (``--array=0-N%array_parallelism``) with the profile's partition, GPUs, CPUs, memory, time,
  QOS, account, extra ``#SBATCH`` options and setup lines. Jobs are :class:`SweepJob` (checkpointable):
  preemption or timeout requeues them and training resumes from the run's checkpoint.
* ``debug``: runs the jobs one by one inside the driver (``--pdb`` drops into the debugger on error).

Ctrl-C cancels the submitted jobs (``scancel`` on Slurm, SIGINT to local processes) and re-raises.

**One owner per run.** Before a job is submitted the driver takes the run's lock
(``<results>/locks/run-<id>.lock``, :mod:`~harness.sweep.lock`) and keeps it, heartbeating, until the job
has ended. A run whose lock another live driver holds (a second driver of the study, or another study
sharing the run) waits in the queue until that owner lets go; then it is skipped if it is finished, or
taken over. A run whose record names a job that still runs though its driver is gone (a worker left by
an old driver, a Slurm job still in the queue) is waited for, or with ``stop_previous`` stopped and
resumed. Local jobs die with their driver (:mod:`~harness.sweep.controller`), and a job that dies from
outside (a signal, the OOM killer, a Slurm cancel, node failure or time limit) is recorded ``failed`` with
the cause named, ``"killed": true`` and ``"resumable": true``: the next plain rerun runs it again, from its
checkpoint or from the start, until it has been killed ``--max-attempts`` times
(:mod:`~harness.sweep.attempts`; ``--retry-failed`` is for runs that failed by their own error).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import submitit
from submitit.local import local as submitit_local

from harness.config import ComputeProfile, ConfigError
from harness.store import ResultsStore
from harness.sweep.attempts import mark_killed
from harness.sweep.controller import DRIVER_PID_ENV, die_with_parent
from harness.sweep.job import JobSpec, SweepJob, describe_io_failure, now, run_job
from harness.sweep.lock import Heartbeat, Lock, describe_owner, pid_alive
from harness.sweep.plan import job_alive
from harness.sweep.prepare import prepare_data
from harness.sweep.progress import ProgressView


def default_parallel(profile: ComputeProfile) -> int:
    """``max_parallel_local`` or, when 0, ``os.cpu_count() // cpus_per_task`` (at least 1)."""
    if profile.max_parallel_local > 0:
        return profile.max_parallel_local
    return max(1, (os.cpu_count() or 1) // max(1, profile.cpus_per_task))


def parse_sbatch_options(options: list[str]) -> dict[str, Any]:
    """``["--exclusive", "--constraint=a100", "#SBATCH --nodes=1"]`` -> submitit additional parameters."""
    out: dict[str, Any] = {}
    for i, opt in enumerate(options):
        o = opt.strip()
        if o.startswith("#SBATCH"):
            o = o[len("#SBATCH"):].strip()
        if not o.startswith("--") or len(o) < 3 or any(ch.isspace() for ch in o.split("=", 1)[0]):
            raise ValueError(f"additional_sbatch[{i}] = {opt!r}: expected a long sbatch option like "
                             "'--constraint=a100' or '--exclusive'")
        key, eq, val = o[2:].partition("=")
        out[key.replace("-", "_")] = val if eq else True
    return out


class BaseExecutor:
    """Claims runs (locks), submits them when a slot is free, waits for them, records jobs that died.
    Subclasses implement :meth:`submit` (and may limit :meth:`slots`)."""

    name = "base"

    def __init__(self, profile: ComputeProfile, store: ResultsStore, log_dir: Path, poll_s: float = 1.0,
                 locks_dir: str | os.PathLike | None = None, stop_previous: bool = False, study: str = "sweep"):
        self.profile, self.store, self.log_dir, self.poll_s = profile, store, Path(log_dir), poll_s
        self.locks_dir = Path(locks_dir) if locks_dir else Path(store.root).parent / "locks"
        self.stop_previous = stop_previous
        self.study = study
        self.locks: dict[str, Lock] = {}
        self.heartbeat: Heartbeat | None = None
        self._told: set[str] = set()

    @property
    def parallel(self) -> int:
        return 1

    def prepare(self, configs: list[dict[str, Any]], progress: bool = True) -> None:
        """Fill the suite and feature cache once (in the driver by default)."""
        prepare_data(configs, progress=progress)

    def slots(self, busy: int) -> int:
        """How many more jobs may start while ``busy`` run (jobs of this driver + watched workers)."""
        return 1 << 30

    def submit(self, specs: list[JobSpec], view: ProgressView) -> dict[str, tuple[Any, JobSpec]]:
        raise NotImplementedError  # pragma: no cover - abstract

    # ------------------------------------------------------------------------------------ ownership
    def run_lock(self, run_id: str) -> Lock:
        if run_id not in self.locks:
            self.locks[run_id] = Lock(self.locks_dir / f"run-{run_id}.lock",
                                      what=f"sweep driver of study {self.study}")
        return self.locks[run_id]

    def release(self, run_id: str) -> None:
        lk = self.locks.pop(run_id, None)
        if lk is not None:
            if self.heartbeat:
                self.heartbeat.remove(run_id)
            lk.release()

    def _tell(self, key: str, view: ProgressView, msg: str) -> None:
        if key not in self._told:
            self._told.add(key)
            view.write(msg)

    def claim(self, spec: JobSpec, view: ProgressView) -> str:
        """Try to own ``spec``'s run: ``go`` (ours, start it), ``busy`` (another live driver owns it:
        ask again later), ``ended`` (finished or failed by another owner meanwhile), ``watch`` (ours,
        but a job of a previous driver still runs on it: wait for that job)."""
        rid = spec.run_id
        lk = self.run_lock(rid)
        if not lk.acquire():
            self._tell(f"busy:{rid}", view, f"waiting   {spec.label} seed={spec.seed} [{rid}]: owned by "
                       f"{describe_owner(lk.holder())}")
            return "busy"
        if self.heartbeat is None:
            self.heartbeat = Heartbeat()
        self.heartbeat.add(rid, lk)
        rec = self.store.read_run(rid) or {}
        st = view.states[rid]
        attempt = int((rec.get("job") or {}).get("attempt", 0))
        if (rec.get("status") == "done" and rec.get("config") == spec.config
                and rec.get("identity") == (spec.identity or None)):  # else stale: rerun it
            view.attach(rid, attempt)
            self.release(rid)
            return "ended"
        if rec.get("status") == "failed" and attempt > st.baseline and not rec.get("resumable"):
            view.refresh_one(rid)
            self.release(rid)
            return "ended"
        if rec.get("status") == "running" and job_alive(rec.get("job")):
            job = rec.get("job") or {}
            if self.stop_previous:
                view.write(f"stopping  {spec.label} seed={spec.seed} [{rid}]: a job of a previous driver "
                           f"({_job_words(job)}) runs it (--stop-previous)")
                stop_job(job)
                return "watch"
            self._tell(f"watch:{rid}", view, f"attached  {spec.label} seed={spec.seed} [{rid}]: waiting for "
                       f"the job of a previous driver ({_job_words(job)}; --stop-previous stops it instead)")
            view.attach(rid, attempt)
            return "watch"
        return "go"

    # ------------------------------------------------------------------------------------- the loop
    def run(self, jobs: list[JobSpec], view: ProgressView) -> None:
        """Claim, submit and wait for every job of ``jobs``; returns when each has ended."""
        pending = deque(jobs)
        active: dict[str, tuple[Any, JobSpec]] = {}
        watched: dict[str, JobSpec] = {}
        try:
            while pending or active or watched:
                batch: list[JobSpec] = []
                for _ in range(len(pending)):
                    if len(batch) >= self.slots(len(active) + len(watched)):
                        break
                    spec = pending.popleft()
                    if spec.parent:  # evaluation-only: its parent's checkpoint first
                        in_sweep = {j.run_id for j in (*pending, *batch)} | set(active) | set(watched)
                        gate = self.parent_gate(spec, in_sweep, active)
                        if gate == "wait":
                            pending.append(spec)
                            continue
                        if gate != "go":
                            self.fail_child(spec, view, gate)
                            continue
                    state = self.claim(spec, view)
                    if state == "go":
                        batch.append(spec)
                    elif state == "busy":
                        pending.append(spec)
                    elif state == "watch":
                        watched[spec.run_id] = spec
                if batch:
                    active.update(self.submit(batch, view))
                    for spec in batch:
                        view.mark_started(spec.run_id)
                for rid, spec in list(watched.items()):
                    rec = self.store.read_run(rid) or {}
                    if rec.get("status") == "running" and job_alive(rec.get("job")):
                        continue
                    del watched[rid]
                    st = view.refresh_one(rid)
                    if st.status in ("done", "failed") and not (rec.get("resumable")):
                        self.release(rid)
                    else:  # the old job died without a result: ours now, resume it
                        pending.appendleft(spec)
                self.reap(active, view)
                if pending or active or watched:
                    time.sleep(self.poll_s)
        except BaseException:
            self.cancel(active)
            raise
        finally:
            for rid in list(self.locks):
                self.release(rid)
            if self.heartbeat:
                self.heartbeat.close()
                self.heartbeat = None

    def parent_gate(self, spec: JobSpec, in_sweep: set[str], active: dict[str, tuple[Any, JobSpec]]) -> str:
        """``go`` when an evaluation-only run's parent is done, ``wait`` while this sweep still runs it, else
        why the child cannot run (the parent failed, or is neither done nor part of this sweep)."""
        rec = self.store.read_run(spec.parent) or {}
        st = rec.get("status")
        if st == "done":
            return "go"
        if spec.parent in active and self.after(spec, active[spec.parent][0]):
            return "go"  # the scheduler holds it until the parent's job has succeeded
        if spec.parent in in_sweep:
            return "wait"
        if st == "failed":
            return f"parent run {spec.parent} failed: {str(rec.get('reason') or '?')[:500]}"
        return f"parent run {spec.parent} is {st or 'not recorded'} and not part of this sweep"

    def after(self, spec: JobSpec, parent_job: Any) -> bool:
        """Whether this executor can submit ``spec`` now, to start once ``parent_job`` has succeeded (a
        scheduler dependency). The base executor cannot: children wait in the driver."""
        return False

    def fail_child(self, spec: JobSpec, view: ProgressView, reason: str, locked: bool = False) -> None:
        """Record an evaluation-only run whose parent cannot give it a checkpoint as failed (never run)."""
        if not locked and not self.run_lock(spec.run_id).acquire():
            return  # another driver owns it: it decides
        try:
            new = {"run_id": spec.run_id, "study": spec.study, "seed": spec.seed, "label": spec.label,
                   "config": spec.config, "git_commit": spec.git_commit, "status": "failed", "reason": reason,
                   "log_path": None, "started": None, "finished": now(), "wall_time_s": None, "resumable": False,
                   "parent_failed": spec.parent, "job": {"executor": self.name, "attempt": 0}}
            if spec.identity:
                new["identity"] = dict(spec.identity)
            self.store.write_run(new)
            view.write(f"failed    {spec.label} seed={spec.seed} [{spec.run_id}]: not run, {reason}")
            view.refresh_one(spec.run_id)
        finally:
            if not locked:
                self.release(spec.run_id)

    def cancel(self, active: dict[str, tuple[Any, JobSpec]]) -> None:
        for job, _ in active.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)

    def reap(self, active: dict[str, tuple[Any, JobSpec]], view: ProgressView) -> None:
        """One poll of the submitted jobs: drop finished ones from ``active`` (recording as failed any
        that died without writing their own record), release their locks, refresh the view."""
        for rid, (job, spec) in list(active.items()):
            if job.done():
                view.refresh_one(rid)
                if view.states[rid].status not in ("done", "failed"):
                    prec = (self.store.read_run(spec.parent) or {}) if spec.parent else {}
                    if prec.get("status") == "failed":  # the scheduler dropped it: its parent failed
                        self.fail_child(spec, view, f"parent run {spec.parent} failed: "
                                        f"{str(prec.get('reason') or '?')[:500]}", locked=True)
                    else:
                        reason, log, resumable, killed = job_failure(job, spec)
                        self.finalize(spec, view, reason, log, resumable, killed)
                del active[rid]
                self.release(rid)
        view.update()

    def finalize(self, spec: JobSpec, view: ProgressView, reason: str, log_path: str | None,
                 resumable: bool = False, killed: bool = False) -> None:
        """Write a ``failed`` record for a job that ended without writing its own final record (if the
        store cannot be written, say so and keep going: the rerun resumes the run). ``killed``: it died
        from outside; the death is counted in its ``attempts.jsonl`` (:mod:`~harness.sweep.attempts`)."""
        st = view.refresh_one(spec.run_id)
        if st.status in ("done", "failed"):
            return
        try:
            rec = self.store.read_run(spec.run_id) or {}
        except (OSError, ValueError):
            rec = {}
        attempt = max(int((rec.get("job") or {}).get("attempt", 0)), st.baseline + 1)
        new = {"run_id": spec.run_id, "study": spec.study, "seed": spec.seed, "label": spec.label,
               "config": spec.config, "git_commit": spec.git_commit, "status": "failed", "reason": reason[:2000],
               "log_path": log_path, "started": rec.get("started"), "finished": now(), "wall_time_s": None,
               "resumable": resumable, "job": {**(rec.get("job") or {}), "executor": self.name, "attempt": attempt}}
        if spec.identity:
            new["identity"] = dict(spec.identity)
        if killed:
            new["killed"] = True
            try:
                new["kills"] = mark_killed(Path(spec.run_dir), attempt, reason)
            except OSError:  # a full disk: count it from the record's last value
                new["kills"] = int(rec.get("kills") or 0) + 1
        try:
            self.store.write_run(new)
        except OSError as e:
            view.write(f"[sweep] could not record run {spec.run_id} as failed: "
                       f"{describe_io_failure(e, self.store.root)}\n"
                       "        (its record stays `running`; the next run of this command resumes it)")
            view.force_state(spec.run_id, "failed", new)
            return
        view.refresh_one(spec.run_id)


def _job_words(job: dict[str, Any]) -> str:
    if job.get("executor") == "slurm" and job.get("job_id"):
        return f"Slurm job {job['job_id']}"
    return f"pid {job.get('pid')} on {job.get('host')}"


def stop_job(job: dict[str, Any], grace_s: float = 10.0) -> None:
    """Stop the job a ``running`` record names: ``scancel`` a Slurm job; SIGTERM a local worker (and its
    submitit controller), then SIGKILL after ``grace_s``."""
    if job.get("executor") == "slurm" and job.get("job_id"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["scancel", str(job["job_id"])], capture_output=True, timeout=30)
        return
    pid = job.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid, job.get("pid_start")):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    t0 = time.monotonic()
    while pid_alive(pid, job.get("pid_start")) and time.monotonic() - t0 < grace_s:
        time.sleep(0.1)
    if pid_alive(pid, job.get("pid_start")):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def signal_words(code: int | None) -> str | None:
    """``137`` (a controller's ``128 + signal``) or ``-9`` (a process's return code) -> ``SIGKILL``."""
    if code is None or code == 0:
        return None
    num = -code if code < 0 else code - 128 if code > 128 else None
    if not num:
        return None
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def oom_kills() -> int | None:
    """The ``oom_kill`` count of this process's cgroup (v2 ``memory.events``), None where unreadable."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((ln.strip().split("::", 1)[1] for ln in f if ln.startswith("0::")), None)
        if path is None:
            return None
        with open(f"/sys/fs/cgroup{path}/memory.events") as f:
            for ln in f:
                if ln.startswith("oom_kill "):
                    return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def job_failure(job: Any, spec: JobSpec) -> tuple[str, str | None, bool, bool]:
    """Why a job ended without a record, its log, whether the plain rerun should run it again, and
    whether it was killed from outside (a signal, the OOM killer, the scheduler: not its own error). A
    killed run is run again from its checkpoint, or from the start when it has none."""
    sig = signal_words(getattr(getattr(job, "_process", None), "returncode", None))
    if sig is not None:  # its task was killed: no result will come, so submitit need not wait 15 s for one
        job._results_timeout_s = 0
    reason, log, res = _job_failure(job)
    if res.get("status") == "failed" and res.get("reason"):  # its record could not be written (full disk)
        return str(res["reason"]), log, bool(res.get("resumable")), False
    killed = sig is not None
    if sig:
        oom_before = getattr(job, "_oom_kills", None)
        oom_now = oom_kills()
        why = f"killed by {sig}"
        if sig == "SIGKILL" and oom_before is not None and oom_now is not None and oom_now > oom_before:
            why += f" (the OOM killer: this cgroup's oom_kill count rose from {oom_before} to {oom_now})"
        reason = f"{why}: {reason}"
    state = str(getattr(job, "state", "") or "")
    if any(s in state for s in ("OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED", "TIMEOUT")):
        killed = True
        if "OUT_OF_MEMORY" in state and "OOM" not in reason:
            reason = f"OOM (Slurm OUT_OF_MEMORY): {reason}"
    ckpt = Path(spec.run_dir) / "checkpoint.pt"
    if killed and ckpt.is_file():
        reason += f" | resumes from {ckpt} on the next run of the sweep"
    elif killed:
        reason += " | starts over on the next run of the sweep (it had no checkpoint yet)"
    return reason, log, killed, killed


def _job_failure(job: Any) -> tuple[str, str | None, dict[str, Any]]:
    """Why a submitit job ended without a record, its log, and the record ``run_job`` returned when the job
    got that far (else ``{}``; submitit is asked once: each ask waits for a result that may not come)."""
    res: dict[str, Any] = {}
    try:
        out = job.result()
        res = out if isinstance(out, dict) else {}
        reason = "the job ended without writing its result record"
    except Exception as e:  # noqa: BLE001 - we only describe it
        text = str(e).strip().splitlines()
        tail = " | ".join(line for line in text[-6:] if line.strip())
        reason = f"{type(e).__name__}: {tail}"[:1500]
    try:
        state = job.state
        if state and state not in ("FINISHED", "COMPLETED", "UNKNOWN"):
            reason = f"job {job.job_id} {state}: {reason}"
    except Exception:  # noqa: BLE001
        pass
    try:
        log = str(job.paths.stderr)
    except Exception:  # noqa: BLE001
        log = None
    return reason, log, res


class DebugExecutor(BaseExecutor):
    """Every job inside this process, one after the other (breakpoints and ``--pdb`` work)."""

    name = "debug"

    def __init__(self, *args: Any, pdb: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.pdb = pdb

    def slots(self, busy: int) -> int:
        return 0 if busy else 1

    def submit(self, specs: list[JobSpec], view: ProgressView) -> dict[str, tuple[Any, JobSpec]]:
        for spec in specs:
            try:
                run_job(spec, reraise=self.pdb)
            except Exception:  # only with --pdb
                import pdb
                traceback.print_exc()
                pdb.post_mortem()
            self.release(spec.run_id)
            view.update()
        return {}


def local_gpu_parameters(profile: ComputeProfile) -> dict[str, Any]:
    """submitit LocalExecutor parameters for ``profile.gpus_per_task``. submitit sets every job's
    ``CUDA_VISIBLE_DEVICES`` to its first ``gpus_per_node`` GPUs (none when 0, which hides the GPUs);
    all jobs get the same ones, so parallel runs share them. A ``CUDA_VISIBLE_DEVICES`` of the driver
    (numeric ids) is kept as the list the jobs' GPUs are taken from."""
    n = profile.gpus_per_task
    if not n:
        return {"gpus_per_node": 0}
    parent = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [int(x) for x in parent.split(",") if x.strip().isdigit()]
    if ids and len(ids) < n:
        raise ConfigError("gpus_per_task", f"the profile asks for {n} GPU(s) per run but CUDA_VISIBLE_DEVICES="
                          f"{parent} shows {len(ids)}")
    return {"gpus_per_node": n, **({"visible_gpus": ids} if ids else {})}


def _start_tied_controller(folder: Path, command: str, tasks_per_node: int = 1, cuda_devices: str = "",
                           timeout_min: float = 5.0, signal_delay_s: int = 30, stderr_to_stdout: bool = False,
                           setup: tuple[str, ...] | list[str] = ()) -> subprocess.Popen:
    """``submitit.local.local.start_controller`` with :mod:`harness.sweep.controller` as the controller,
    started so that it dies with this process (``PR_SET_PDEATHSIG``)."""
    env = dict(os.environ)
    env.update(SUBMITIT_LOCAL_NTASKS=str(tasks_per_node), SUBMITIT_LOCAL_COMMAND=command,
               SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * timeout_min)),
               SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(signal_delay_s)),
               SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_JOB_NUM_NODES="1",
               SUBMITIT_STDERR_TO_STDOUT="1" if stderr_to_stdout else "", SUBMITIT_EXECUTOR="local",
               CUDA_VISIBLE_DEVICES=cuda_devices, SUBMITIT_LOCAL_WITH_SHELL="1" if setup else "",
               **{DRIVER_PID_ENV: str(os.getpid())})
    cmd: Any = [sys.executable, "-c", "from harness.sweep.controller import cli; cli()", str(folder)]
    if setup:
        cmd = " && ".join([*setup, shlex.join(cmd)])
    parent = os.getpid()
    return subprocess.Popen(cmd, shell=bool(setup), env=env,  # noqa: S603 - argument list or the profile's setup
                            preexec_fn=lambda: die_with_parent(signal.SIGKILL, parent))


class TiedLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor whose jobs die with the driver and report the signal that killed them."""

    def _submit_command(self, command: str) -> submitit_local.LocalJob:
        n = self.parameters.get("tasks_per_node", 1)
        n_gpus = self.parameters.get("gpus_per_node", 0)
        visible = self.parameters.get("visible_gpus", ())
        gpus = range(n_gpus) if visible == () else visible[:n_gpus]
        proc = _start_tied_controller(
            self.folder, command, tasks_per_node=n, cuda_devices=",".join(str(k) for k in gpus),
            timeout_min=self.parameters.get("timeout_min", 2.0),
            signal_delay_s=self.parameters.get("signal_delay_s", 30),
            stderr_to_stdout=self.parameters.get("stderr_to_stdout", False), setup=self.parameters.get("setup", ()))
        return submitit_local.LocalJob(folder=self.folder, job_id=str(proc.pid), process=proc, tasks=list(range(n)))


class LocalExecutor(BaseExecutor):
    """One submitit local process per run, at most ``max_parallel`` at a time (live workers of a
    previous driver that this one waits for count against the limit)."""

    name = "local"

    def __init__(self, *args: Any, max_parallel: int | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.max_parallel = max_parallel or default_parallel(self.profile)
        self._ex: TiedLocalExecutor | None = None

    @property
    def parallel(self) -> int:
        return self.max_parallel

    def slots(self, busy: int) -> int:
        return max(0, self.max_parallel - busy)

    def submit(self, specs: list[JobSpec], view: ProgressView) -> dict[str, tuple[Any, JobSpec]]:
        if self._ex is None:
            self._ex = TiedLocalExecutor(folder=self.log_dir)
            self._ex.update_parameters(timeout_min=self.profile.time_min, **local_gpu_parameters(self.profile))
        out = {}
        for spec in specs:
            job = self._ex.submit(run_job, spec)
            job._oom_kills = oom_kills()  # compared when the job ends: was it the OOM killer?
            out[spec.run_id] = (job, spec)
        return out


class SlurmExecutor(BaseExecutor):
    """Data preparation as one Slurm job, then every run as one array of :class:`SweepJob` tasks."""

    name = "slurm"

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._deps: dict[str, str] = {}  # child run id -> the Slurm job id it must follow (afterok)

    @property
    def parallel(self) -> int:
        return self.profile.array_parallelism

    def executor(self, job_name: str, tasks: int | None = None) -> submitit.SlurmExecutor:
        """A submitit SlurmExecutor from the profile; ``tasks`` overrides ``tasks_per_node`` (the data job
        is one process)."""
        p = self.profile
        ex = submitit.SlurmExecutor(folder=self.log_dir)
        params: dict[str, Any] = {
            "job_name": job_name, "time": p.time_min, "cpus_per_task": p.cpus_per_task,
            "mem": f"{max(1, int(round(p.mem_gb * 1024)))}M", "array_parallelism": p.array_parallelism,
            "setup": list(p.setup), "signal_delay_s": 120 if p.time_min > 10 else 30,
            "ntasks_per_node": tasks or p.tasks_per_node,
        }
        if p.partition:
            params["partition"] = p.partition
        if p.gpus_per_task:
            params["gpus_per_task"] = p.gpus_per_task
        if p.qos:
            params["qos"] = p.qos
        if p.account:
            params["account"] = p.account
        extra = parse_sbatch_options(p.additional_sbatch)
        if extra:
            params["additional_parameters"] = extra
        ex.update_parameters(**params)
        return ex

    def prepare(self, configs: list[dict[str, Any]], progress: bool = True) -> None:
        job = self.executor(f"{self.study}-data", tasks=1).submit(prepare_data, configs, False)
        print(f"[sweep] data preparation: Slurm job {job.job_id} (log {job.paths.stdout})", flush=True)
        try:
            while not job.done():
                time.sleep(self.poll_s)
            job.result()
        except BaseException:
            job.cancel(check=False)
            raise

    def after(self, spec: JobSpec, parent_job: Any) -> bool:
        self._deps[spec.run_id] = str(parent_job.job_id)
        return True

    def submit(self, specs: list[JobSpec], view: ProgressView) -> dict[str, tuple[Any, JobSpec]]:
        """The first batch (every run this driver owns) as one job array; later ones (runs another
        driver let go of) as their own arrays. Evaluation-only runs whose parent's job is in the queue go
        as arrays of their own that Slurm starts once that job has succeeded (``--dependency=afterok``;
        ``--kill-on-invalid-dep``: a failed parent cancels them, and the driver records why)."""
        groups: dict[str, list[JobSpec]] = {}
        for spec in specs:
            groups.setdefault(self._deps.pop(spec.run_id, ""), []).append(spec)
        out: dict[str, tuple[Any, JobSpec]] = {}
        for dep, group in groups.items():
            ex = self.executor(f"{self.study}")
            if dep:
                extra = dict(ex.parameters.get("additional_parameters") or {})
                extra["kill_on_invalid_dep"] = "yes"
                ex.update_parameters(dependency=f"afterok:{dep}", additional_parameters=extra)
            sjobs = ex.map_array(SweepJob(), group)
            after = f", after job {dep} succeeds" if dep else ""
            view.write(f"submitted Slurm array {sjobs[0].job_id.split('_')[0]} ({len(sjobs)} task(s), "
                       f"%{self.profile.array_parallelism}{after}); logs in {self.log_dir}")
            for j, spec in zip(sjobs, group):
                self.mark_queued(spec, j)
                out[spec.run_id] = (j, spec)
        return out

    def mark_queued(self, spec: JobSpec, job: Any) -> None:
        """Record the queued Slurm task before it starts (``running``, its job id, the attempt unchanged),
        so that if this driver dies a rerun finds the task in ``squeue`` and waits for it instead of
        submitting the run a second time."""
        try:
            prev = self.store.read_run(spec.run_id) or {}
            if prev.get("status") == "done":
                return
            self.store.write_run({
                "run_id": spec.run_id, "study": spec.study, "seed": spec.seed, "label": spec.label,
                "config": spec.config, "git_commit": spec.git_commit, "status": "running", "reason": None,
                "log_path": str(job.paths.stderr), "started": None, "finished": None, "wall_time_s": None,
                "job": {"executor": "slurm", "job_id": str(job.job_id), "queued": now(),
                        "attempt": int((prev.get("job") or {}).get("attempt", 0))}})
        except (OSError, ValueError) as e:
            view_msg = describe_io_failure(e, self.store.root) if isinstance(e, OSError) else str(e)
            print(f"[sweep] could not record the queued job of run {spec.run_id}: {view_msg}", flush=True)


EXECUTORS = {"local": LocalExecutor, "slurm": SlurmExecutor, "debug": DebugExecutor}
