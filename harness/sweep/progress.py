"""Live progress of a sweep: runs queued / running / done / failed, the slowest and the failing named.

The view reads the truth from the results store (every job writes ``running`` then ``done`` or
``failed``), so it is the same whichever executor runs the jobs. A record counts for this sweep only
once its ``job.attempt`` is newer than the one seen when the job was submitted (an old ``failed`` record
of a ``--retry-failed`` run shows as queued until the new attempt starts).
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm.auto import tqdm

from harness.store import ResultsStore
from harness.sweep.attempts import DEFAULT_MAX_ATTEMPTS, kill_action
from harness.sweep.job import JobSpec


def _attempt(rec: dict[str, Any] | None) -> int:
    return int(((rec or {}).get("job") or {}).get("attempt", 0))


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _elapsed(started: str | None) -> float:
    if not started:
        return 0.0
    try:
        t = _dt.datetime.fromisoformat(started)
    except ValueError:
        return 0.0
    return max(0.0, (_dt.datetime.now(_dt.timezone.utc) - t).total_seconds())


@dataclass
class RunState:
    job: JobSpec
    baseline: int  # job.attempt of the record before submission
    status: str = "queued"  # queued | running | done | failed
    record: dict[str, Any] | None = None


class ProgressView:
    """``update()`` re-reads the records of the submitted runs, prints a line per finished/failed run and
    keeps a tqdm bar with the counts; ``summary()`` names the slowest and the failed runs."""

    def __init__(self, store: ResultsStore, jobs: list[JobSpec], enabled: bool = True, stream: TextIO | None = None,
                 n_skipped: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        self.store = store
        self.max_attempts = max_attempts
        self.stream = stream or sys.stderr
        self.states = {j.run_id: RunState(j, _attempt(store.read_run(j.run_id))) for j in jobs}
        self.n_skipped = n_skipped
        self.t0 = time.time()
        self.enabled = enabled
        # a terminal gets a live bar; a log file (CI, Slurm, nohup) gets a status line when counts change
        # (``enabled=False``, i.e. --no-progress, also gives the plain status lines instead of the bar)
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = tqdm(total=len(jobs), desc="sweep", unit="run", disable=not self.tty,
                        file=self.stream, dynamic_ncols=True, leave=True)
        self._last_line = ""
        self._last_slow = 0.0

    def write(self, msg: str) -> None:
        if self.tty:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def mark_started(self, run_id: str) -> None:
        """Executors that know a job started (before it wrote its record) may say so."""

    def attach(self, run_id: str, attempt: int) -> None:
        """Count the record of ``attempt`` as this sweep's: a job of a previous driver that this one
        waits for, or a run another owner finished while this one waited."""
        st = self.states[run_id]
        st.baseline = min(st.baseline, attempt - 1)
        self.refresh_one(run_id)

    def force_state(self, run_id: str, status: str, record: dict[str, Any]) -> None:
        """Set a run's state without a record in the store (one that could not be written)."""
        st = self.states[run_id]
        if st.status not in ("done", "failed"):
            st.status, st.record = status, record
            self.write(f"FAILED  {st.job.label} seed={st.job.seed} [{run_id}]: {record.get('reason')}")
            self.bar.update(1)

    def refresh_one(self, run_id: str) -> RunState:
        st = self.states[run_id]
        if st.status in ("done", "failed"):
            return st
        try:
            rec = self.store.read_run(run_id)
        except (OSError, ValueError):  # unreadable for now (a full disk, a file being replaced on NFS)
            return st
        if rec is None or _attempt(rec) <= st.baseline:
            return st
        status = rec.get("status")
        st.record = rec
        if status in ("done", "failed") and st.status != status:
            st.status = status
            j = st.job
            if status == "done":
                self.write(f"done    {j.label} seed={j.seed} [{j.run_id}] in {_fmt_s(rec.get('wall_time_s') or 0)}")
            else:
                self.write(f"FAILED  {j.label} seed={j.seed} [{j.run_id}]: {rec.get('reason')}\n"
                           f"        log: {rec.get('log_path')}")
            self.bar.update(1)
        elif status == "running":
            st.status = "running"
        return st

    def update(self) -> dict[str, int]:
        """Re-read the store; returns the counts per state."""
        for rid in self.states:
            self.refresh_one(rid)
        c = self.counts()
        post = f"queued {c['queued']} | running {c['running']} | done {c['done']} | failed {c['failed']}"
        slow = self.slowest_running()
        if slow:
            post += f" | slowest: {slow[0].job.label} s{slow[0].job.seed} {_fmt_s(slow[1])}"
        if self.tty:
            self.bar.set_postfix_str(post, refresh=True)
        else:
            line = post.split(" | slowest")[0]
            if line != self._last_line or (slow and time.time() - self._last_slow > 60):
                self.write(f"[sweep {_fmt_s(time.time() - self.t0)}] {post}")
                self._last_line, self._last_slow = line, time.time()
        return c

    def counts(self) -> dict[str, int]:
        c = {"queued": 0, "running": 0, "done": 0, "failed": 0}
        for st in self.states.values():
            c[st.status] += 1
        return c

    def slowest_running(self) -> tuple[RunState, float] | None:
        running = [(st, _elapsed((st.record or {}).get("started"))) for st in self.states.values()
                   if st.status == "running"]
        return max(running, key=lambda x: x[1]) if running else None

    def pending(self) -> list[str]:
        return [rid for rid, st in self.states.items() if st.status not in ("done", "failed")]

    def close(self) -> None:
        self.update()
        self.bar.close()

    def summary(self) -> str:
        c = self.counts()
        failed = [st.record or {} for st in self.states.values() if st.status == "failed"]
        again = [r for r in failed if r.get("resumable") and kill_action(r, self.max_attempts)[0] == "resume"]
        spent = [r for r in failed if r.get("resumable") and r not in again]
        lines = [f"sweep finished in {_fmt_s(time.time() - self.t0)}: {c['done']} done, {c['failed']} failed, "
                 f"{c['queued'] + c['running']} unfinished, {self.n_skipped} already done before"]
        if again:
            lines.append(f"{len(again)} of the failed run(s) did not fail by their own error (killed from outside: "
                         "a signal, the OOM killer, the scheduler; or a full disk): run the same command again to "
                         "run them again (from their checkpoint, or from the start without one)")
        if spent:
            lines.append(f"{len(spent)} failed run(s) were killed {self.max_attempts} times (--max-attempts): the "
                         "plain rerun leaves them failed; --retry-failed runs them again")
        done = sorted((st for st in self.states.values() if st.status == "done"),
                      key=lambda st: -float((st.record or {}).get("wall_time_s") or 0))
        if done:
            lines.append("slowest runs: " + ", ".join(
                f"{st.job.label} s{st.job.seed} ({_fmt_s((st.record or {}).get('wall_time_s') or 0)})"
                for st in done[:3]))
        for st in self.states.values():
            if st.status == "failed":
                r = st.record or {}
                lines.append(f"failed: {st.job.label} seed={st.job.seed} [{st.job.run_id}]: {r.get('reason')} "
                             f"(log: {r.get('log_path')})")
        return "\n".join(lines)
