"""The parts the fault tests stand on, one by one (fast): owner locks (exclusive under a real race of
processes, dead and stale owners taken over, a fresh lock never broken), signal names, disk-full
messages, the feature cache's hit counts under threads, the report's temp-file cleanup."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from harness.data.cache import FeatureCache
from harness.sweep.executors import signal_words
from harness.sweep.job import describe_io_failure, disk_full, remove_temp_files
from harness.sweep.lock import HOST, Lock, pid_alive, proc_start, read_lock


def _race(path: str, start: mp.synchronize.Barrier, end: mp.synchronize.Barrier, q: mp.Queue) -> None:
    lk = Lock(path)
    start.wait()
    q.put(lk.acquire())
    end.wait()  # hold it until everyone has tried
    lk.release()


def _race_n(path: Path, n: int = 8) -> list[bool]:
    ctx = mp.get_context("fork")
    start, end, q = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(path), start, end, q)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got


def test_lock_is_exclusive_under_a_race_of_processes(tmp_path: Path) -> None:
    path = tmp_path / "run-x.lock"
    assert sorted(_race_n(path)) == [False] * 7 + [True]
    assert not path.exists()  # the winner released it


def test_a_dead_owners_lock_is_taken_over_once_under_a_race(tmp_path: Path) -> None:
    path = tmp_path / "run-x.lock"
    code = f"from harness.sweep.lock import Lock; import os; assert Lock({str(path)!r}).acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)  # takes the lock and dies holding it
    info, _ = read_lock(path)
    assert info["host"] == HOST and not pid_alive(info["pid"], info["pid_start"])
    assert sorted(_race_n(path)) == [False] * 7 + [True]  # exactly one breaker takes it
    assert not list(tmp_path.glob("*.break"))


def test_live_owner_kept_reused_pid_and_old_heartbeat_of_another_host_taken(tmp_path: Path) -> None:
    mine = Lock(tmp_path / "a.lock")
    assert mine.acquire() and not Lock(tmp_path / "a.lock").acquire()  # a live owner on this host
    # the same pid, but another process (another start time): the owner is dead
    fake = {"host": HOST, "pid": os.getpid(), "pid_start": (proc_start(os.getpid()) or 0) + 1, "token": "t"}
    (tmp_path / "b.lock").write_text(json.dumps(fake))
    assert Lock(tmp_path / "b.lock").acquire()
    # another host: only the heartbeat (mtime, by the file server's clock) tells
    other = {"host": "elsewhere.cluster", "pid": 1, "token": "t"}
    (tmp_path / "c.lock").write_text(json.dumps(other))
    assert not Lock(tmp_path / "c.lock", stale_after_s=300).acquire()
    old = time.time() - 301
    os.utime(tmp_path / "c.lock", (old, old))
    got = Lock(tmp_path / "c.lock", stale_after_s=300)
    assert got.acquire() and got.holder()["pid"] == os.getpid()


def test_heartbeat_renews_and_notices_a_lost_lock(tmp_path: Path) -> None:
    lk = Lock(tmp_path / "a.lock")
    assert lk.acquire()
    old = time.time() - 100
    os.utime(lk.path, (old, old))
    assert lk.heartbeat() and time.time() - lk.path.stat().st_mtime < 10
    lk.path.unlink()  # another process judged it dead and took it
    assert Lock(tmp_path / "a.lock").acquire()
    assert not lk.heartbeat() and not lk.owns()
    lk.release()  # must not remove the new owner's lock
    assert lk.path.exists()


def test_a_killed_breakers_guard_is_cleared(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"host": HOST, "pid": 2**22 + 12345, "token": "t"}))  # a dead owner
    guard = tmp_path / "a.lock.break"
    guard.write_text("{}")
    assert not Lock(path).acquire()  # a breaker is (seemingly) at work
    old = time.time() - 60
    os.utime(guard, (old, old))
    assert not Lock(path).acquire()  # this attempt clears the guard left by a dead breaker ...
    assert Lock(path).acquire()  # ... so the next one breaks the dead owner's lock


def test_signal_words_and_disk_full_messages(tmp_path: Path) -> None:
    assert signal_words(137) == "SIGKILL" and signal_words(-9) == "SIGKILL" and signal_words(143) == "SIGTERM"
    assert signal_words(0) is None and signal_words(1) is None and signal_words(None) is None
    e = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full(e, tmp_path)
    assert describe_io_failure(e, tmp_path).startswith("disk full: no space left on /")
    wrapped = RuntimeError("unexpected pos 576 vs 534")
    wrapped.__cause__ = e
    assert disk_full(wrapped, tmp_path)
    assert describe_io_failure(ValueError("bad"), tmp_path) == "ValueError: bad"


def test_remove_temp_files_of_a_run_dir(tmp_path: Path) -> None:
    keep = [tmp_path / "checkpoint.pt", tmp_path / "model" / "config.json", tmp_path / "metrics.jsonl"]
    gone = [tmp_path / "checkpoint.pt.tmp4242", tmp_path / "model" / "model.safetensors.tmp77",
            tmp_path / ".train_summary.json.vm.4242.abc.tmp"]
    for p in keep + gone:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    (tmp_path / ".model.export.abc").mkdir()
    (tmp_path / ".model.export.abc" / "w").write_text("x")
    assert len(remove_temp_files(tmp_path)) == 4
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert not (tmp_path / ".model.export.abc").exists()


def test_cache_hit_flags_are_exact_under_threads(tmp_path: Path) -> None:
    """``fetch`` says hit/computed per call; the old ``hits > before`` saw other threads' hits."""
    cache = FeatureCache(tmp_path)
    keys = [f"{i:016x}" for i in range(24)]
    for k in keys[::2]:
        cache.put(k, torch.zeros(2))
    flags: dict[str, bool] = {}
    barrier = threading.Barrier(8)

    def work(part: list[str]) -> None:
        barrier.wait()
        for k in part:
            flags[k] = cache.fetch(k, lambda: (time.sleep(0.005), torch.ones(2))[1])[1]

    threads = [threading.Thread(target=work, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert flags == {k: i % 2 == 0 for i, k in enumerate(keys)}
    assert (cache.hits, cache.misses, cache.writes) == (12, 12, 24)


def test_report_removes_a_killed_reports_temp_files(tmp_path: Path) -> None:
    from harness.report import clean_outputs
    from harness.store import _HOST

    dead = tmp_path / f".table_main.md.{_HOST}.{2**22 + 999}.x1y2.tmp"
    live = tmp_path / f".table_main.md.{_HOST}.{os.getpid()}.x1y2.tmp"
    for p in (dead, live):
        p.write_text("half")
    clean_outputs(tmp_path)
    assert not dead.exists() and live.exists()  # a live writer's file is left alone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_tied_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The mechanism of the local executor: parent (killed) -> child with die_with_parent -> gone."""
    out = tmp_path / "pid"
    child = ("import time, sys; from harness.sweep.controller import die_with_parent; "
             f"die_with_parent(); open({str(out)!r}, 'w').write(str(__import__('os').getpid())); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    t0 = time.monotonic()
    while not (out.exists() and out.read_text()) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    pid = int(out.read_text())
    assert pid_alive(pid)
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    while pid_alive(pid) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_stop_job_terminates_a_previous_drivers_worker() -> None:
    """``--stop-previous``: SIGTERM to the pid a running record names (SIGKILL after the grace)."""
    from harness.sweep.executors import stop_job

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                                 "time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    time.sleep(0.2)
    for p, code in ((polite, -15), (stubborn, -9)):
        job = {"executor": "local", "host": HOST, "pid": p.pid, "pid_start": proc_start(p.pid)}
        stop_job(job, grace_s=1.0)
        assert p.wait(timeout=10) == code


def test_the_kill_count_lives_in_attempts_jsonl_and_bounds_the_plain_rerun(tmp_path: Path) -> None:
    from harness.sweep.attempts import cause_of, kill_action, mark_killed, read_attempts

    (tmp_path / "attempts.jsonl").write_text('{"attempt": 1, "pid": 7}\n{"attempt": 2, "pid": 8}\n{"att')  # torn
    why = "killed by SIGKILL (the OOM killer: oom_kill rose from 0 to 1): UncompletedJobError: ... | resumes from x"
    assert cause_of(why) == "killed by SIGKILL (the OOM killer: oom_kill rose from 0 to 1)"
    assert mark_killed(tmp_path, 2, why) == 1
    assert mark_killed(tmp_path, 3, "job 9 OUT_OF_MEMORY: ...") == 2  # died before writing its line
    assert [(a["attempt"], a.get("killed")) for a in read_attempts(tmp_path)] == [
        (1, None), (2, "killed by SIGKILL (the OOM killer: oom_kill rose from 0 to 1)"), (3, "job 9 OUT_OF_MEMORY")]
    rec = {"status": "failed", "resumable": True, "killed": True, "kills": 2, "reason": why, "job": {"attempt": 3}}
    assert kill_action(rec, 3) == ("resume", None) and kill_action({**rec, "kills": 9}, 0) == ("resume", None)
    action, reason = kill_action({**rec, "kills": 3}, 3)
    assert action == "failed" and reason.startswith("killed 3 times in 3 attempt(s), the --max-attempts limit of 3; "
                                                    "last: killed by SIGKILL (the OOM killer")
    assert kill_action({"resumable": True, "kills": 5}, 3) == ("resume", None)  # a full disk is not a kill
