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
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import submitit

from harness.config import ComputeProfile, ConfigError
from harness.store import ResultsStore
from harness.sweep.job import JobSpec, SweepJob, now, run_job
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
    name = "base"

    def __init__(self, profile: ComputeProfile, store: ResultsStore, log_dir: Path, poll_s: float = 1.0):
        self.profile, self.store, self.log_dir, self.poll_s = profile, store, Path(log_dir), poll_s

    @property
    def parallel(self) -> int:
        return 1

    def prepare(self, configs: list[dict[str, Any]], progress: bool = True) -> None:
        """Fill the suite and feature cache once (in the driver by default)."""
        from harness.sweep.prepare import prepare_data

        prepare_data(configs, progress=progress)

    def run(self, jobs: list[JobSpec], view: ProgressView) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reap(self, active: dict[str, tuple[Any, JobSpec]], view: ProgressView) -> None:
        """One poll of the submitted jobs: drop finished ones from ``active`` (recording as failed any
        that died without writing their own record), refresh the view, and wait ``poll_s`` if any remain."""
        for rid, (job, spec) in list(active.items()):
            if job.done():
                view.refresh_one(rid)
                if view.states[rid].status not in ("done", "failed"):
                    reason, log = _job_failure(job)
                    self.finalize(spec, view, reason, log)
                del active[rid]
        view.update()
        if active:
            time.sleep(self.poll_s)

    def finalize(self, spec: JobSpec, view: ProgressView, reason: str, log_path: str | None) -> None:
        """Write a ``failed`` record for a job that ended without writing its own final record."""
        st = view.refresh_one(spec.run_id)
        if st.status in ("done", "failed"):
            return
        rec = self.store.read_run(spec.run_id) or {}
        attempt = max(int((rec.get("job") or {}).get("attempt", 0)), st.baseline + 1)
        self.store.write_run({
            "run_id": spec.run_id, "study": spec.study, "seed": spec.seed, "label": spec.label,
            "config": spec.config, "git_commit": spec.git_commit, "status": "failed", "reason": reason[:2000],
            "log_path": log_path, "started": rec.get("started"), "finished": now(), "wall_time_s": None,
            "job": {**(rec.get("job") or {}), "executor": self.name, "attempt": attempt}})
        view.refresh_one(spec.run_id)


def _job_failure(job: Any) -> tuple[str, str | None]:
    """Why a submitit job ended without a record, and its log."""
    try:
        job.result()
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
    return reason, log


class DebugExecutor(BaseExecutor):
    """Every job inside this process, one after the other (breakpoints and ``--pdb`` work)."""

    name = "debug"

    def __init__(self, *args: Any, pdb: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.pdb = pdb

    def run(self, jobs: list[JobSpec], view: ProgressView) -> None:
        for spec in jobs:
            try:
                run_job(spec, reraise=self.pdb)
            except Exception:  # only with --pdb
                import pdb
                import traceback

                traceback.print_exc()
                pdb.post_mortem()
            view.update()


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


class LocalExecutor(BaseExecutor):
    """One submitit local process per run, at most ``max_parallel`` at a time."""

    name = "local"

    def __init__(self, *args: Any, max_parallel: int | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.max_parallel = max_parallel or default_parallel(self.profile)

    @property
    def parallel(self) -> int:
        return self.max_parallel

    def run(self, jobs: list[JobSpec], view: ProgressView) -> None:
        ex = submitit.LocalExecutor(folder=self.log_dir)
        ex.update_parameters(timeout_min=self.profile.time_min, **local_gpu_parameters(self.profile))
        pending = deque(jobs)
        active: dict[str, tuple[Any, JobSpec]] = {}
        try:
            while pending or active:
                while pending and len(active) < self.max_parallel:
                    spec = pending.popleft()
                    active[spec.run_id] = (ex.submit(run_job, spec), spec)
                self.reap(active, view)
        except BaseException:
            for job, _ in active.values():
                job.cancel()
            raise


class SlurmExecutor(BaseExecutor):
    """Data preparation as one Slurm job, then every run as one array of :class:`SweepJob` tasks."""

    name = "slurm"

    def __init__(self, *args: Any, study: str = "sweep", **kw: Any):
        super().__init__(*args, **kw)
        self.study = study

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
        from harness.sweep.prepare import prepare_data

        job = self.executor(f"{self.study}-data", tasks=1).submit(prepare_data, configs, False)
        print(f"[sweep] data preparation: Slurm job {job.job_id} (log {job.paths.stdout})", flush=True)
        try:
            while not job.done():
                time.sleep(self.poll_s)
            job.result()
        except BaseException:
            job.cancel(check=False)
            raise

    def run(self, jobs: list[JobSpec], view: ProgressView) -> None:
        ex = self.executor(f"{self.study}")
        sjobs = ex.map_array(SweepJob(), jobs)
        view.write(f"submitted Slurm array {sjobs[0].job_id.split('_')[0]} ({len(sjobs)} task(s), "
                   f"%{self.profile.array_parallelism}); logs in {self.log_dir}")
        active = {spec.run_id: (j, spec) for j, spec in zip(sjobs, jobs)}
        try:
            while active:
                self.reap(active, view)
        except BaseException:
            for job, _ in active.values():
                job.cancel(check=False)
            raise


EXECUTORS = {"local": LocalExecutor, "slurm": SlurmExecutor, "debug": DebugExecutor}
