"""The sweep driver under faults, for real (the CLI, real training of the tiny preset, real processes):
two drivers at once, a SIGKILLed driver and its immediate rerun, a SIGKILLed worker and the plain rerun,
a full disk (a small tmpfs). Each must give one execution per run (``attempts.jsonl``: one line per
execution; ``metrics.jsonl``: every step once), no orphan process, a clear message and, after the
plain rerun, a complete store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.data.synthetic import SuiteSpec, make_suite
from harness.store import ResultsStore
from harness.sweep.lock import pid_alive

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "mia"
    make_suite(out, SuiteSpec(n_train=24, n_val=0, n_test=24, frames_long=16, frames_dense=16), workers=1,
               progress=False)
    return out


def study(tmp_path: Path, suite: Path, name: str, steps: int = 3, seeds: str = "[0, 1]") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
study: {name}
base:
  train: {{steps: {steps}, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, log_every: 1}}
  eval: {{limit: 4}}
  data: {{suite: {suite}, cache_dir: {tmp_path / 'cache'}}}
grid:
  model.compressor.block: [identity]
seeds: {seeds}
suites: [mia_long]
""")
    return p


def start(spec: Path, res: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.sweep", str(spec), "--results", str(res),
                             "--no-progress", "--no-report", "--poll", "0.3", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def wait_for(cond: Callable[[], object], timeout: float = 120, what: str = "") -> object:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def attempts(res: Path, rid: str) -> list[dict]:
    p = res / "runs" / rid / "attempts.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def steps(res: Path, rid: str) -> list[int]:
    return [json.loads(ln)["step"] for ln in (res / "runs" / rid / "metrics.jsonl").read_text().splitlines()
            if '"step"' in ln]


def assert_complete(res: Path, study_name: str, n_steps: int, executions: int = 1) -> list[dict]:
    """Every run of the study done, trained once per step, executed ``executions`` time(s)."""
    store = ResultsStore(res / "store")
    recs = [store.read_run(e["run_id"]) for e in store.read_study(study_name)["runs"]]
    for rec in recs:
        assert rec["status"] == "done", rec.get("reason")
        got = steps(res, rec["run_id"])
        assert got == sorted(set(got)) and got[-1] == n_steps, got  # every step once, in order
        assert len(attempts(res, rec["run_id"])) == executions, attempts(res, rec["run_id"])
    leftovers = [p for p in res.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock")]
    assert not leftovers, leftovers  # no temp files, every lock released
    return recs


def running_record(res: Path, rid: str) -> dict | None:
    """The run's record once its job has written a checkpoint (so a kill leaves something to resume)."""
    rec = ResultsStore(res / "store").read_run(rid)
    if rec and rec.get("status") == "running" and (res / "runs" / rid / "checkpoint.pt").exists():
        return rec
    return None


def run_ids(spec: Path) -> list[str]:
    from harness.sweep.plan import plan_study
    from harness.sweep.spec import load_spec

    return [r.run_id for r in plan_study(load_spec(spec)).runs]


def test_two_drivers_and_a_sharing_study_run_each_run_once(tmp_path: Path, suite: Path) -> None:
    """Two drivers of one study started together, and a third study with the same runs: one execution
    per run; the second driver of the study waits for the first, the other study's waits for the runs."""
    a_spec, other = study(tmp_path, suite, "twice"), study(tmp_path, suite, "shares")
    assert run_ids(a_spec) == run_ids(other)
    res = tmp_path / "res"
    procs = [start(a_spec, res, "--max-parallel", "2"), start(a_spec, res, "--max-parallel", "2"),
             start(other, res, "--max-parallel", "2")]
    outs = [finish(p) for p in procs]
    for rc, out in outs:
        assert rc == 0, out
    text = "\n".join(o for _, o in outs)
    assert "is being run by sweep driver of study twice" in text, text  # the second driver attached
    assert "owned by sweep driver of study" in text or text.count("nothing to run") >= 1, text
    for name in ("twice", "shares"):
        assert_complete(res, name, 3)


def test_sigkill_of_the_driver_then_immediate_rerun(tmp_path: Path, suite: Path) -> None:
    spec = study(tmp_path, suite, "killdrv", steps=60, seeds="[0]")
    res = tmp_path / "res"
    (rid,) = run_ids(spec)
    drv = start(spec, res)
    rec = wait_for(lambda: running_record(res, rid), what="the first checkpoint")
    worker, controller = rec["job"]["pid"], int(rec["job"]["job_id"])
    drv.kill()
    drv.communicate(timeout=30)
    # no orphan: the job's controller and its task die with the driver
    wait_for(lambda: not pid_alive(worker) and not pid_alive(controller), timeout=10, what="the worker to die")
    rc, out = finish(start(spec, res))
    assert rc == 0, out
    assert "1 resume" in out, out
    assert_complete(res, "killdrv", 60, executions=2)
    first, second = attempts(res, rid)
    assert first["pid"] == worker and second["pid"] != worker


def test_sigkill_of_a_worker_is_named_and_the_plain_rerun_resumes(tmp_path: Path, suite: Path) -> None:
    spec = study(tmp_path, suite, "killwrk", steps=60, seeds="[0]")
    res = tmp_path / "res"
    (rid,) = run_ids(spec)
    drv = start(spec, res)
    rec = wait_for(lambda: running_record(res, rid), what="the first checkpoint")
    os.kill(rec["job"]["pid"], signal.SIGKILL)
    rc, out = finish(drv)
    assert rc == 1, out
    rec = ResultsStore(res / "store").read_run(rid)
    assert rec["status"] == "failed" and rec["resumable"] is True and rec["killed"] is True, rec
    assert rec["reason"].startswith("killed by SIGKILL") and "resumes from" in rec["reason"], rec["reason"]
    assert rec["kills"] == 1 and attempts(res, rid)[0]["killed"].startswith("killed by SIGKILL")
    assert "run the same command again to run them again" in out, out
    rc, out = finish(start(spec, res))  # plain: no --retry-failed
    assert rc == 0, out
    assert "1 resume" in out, out
    assert_complete(res, "killwrk", 60, executions=2)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (the tiny run's checkpoint is ~1.4 MB); skips where it cannot be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_a_failed_record_and_the_rerun_finishes(tmp_path: Path, suite: Path, small_disk: Path) -> None:
    spec = study(tmp_path, suite, "fulldisk", steps=4, seeds="[0]")
    res = small_disk / "res"
    (rid,) = run_ids(spec)
    rc, out = finish(start(spec, res))
    assert rc == 1, out
    assert "Traceback" not in out, out  # the driver's output: messages, not tracebacks
    rec = ResultsStore(res / "store").read_run(rid)
    assert rec["status"] == "failed" and rec["reason"].startswith(f"disk full: no space left on {small_disk}"), rec
    assert rec["resumable"] is True and "removed" in rec["reason"], rec["reason"]
    assert not [p for p in res.rglob("*") if ".tmp" in p.name], "temp files left on the full disk"
    assert "disk full" in out, out
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rc, out = finish(start(spec, res))  # plain rerun, now with room
    assert rc == 0, out
    assert "1 resume" in out, out
    assert_complete(res, "fulldisk", 4, executions=2)


def test_a_live_worker_of_a_dead_driver_is_waited_for_then_the_run_resumes(tmp_path: Path, suite: Path) -> None:
    """A ``running`` record naming a live process of this host and no live owner (a worker left by a
    driver without the PDEATHSIG tie, or on a system without it): the rerun waits for it, counts it
    against --max-parallel, and resumes the run once it is gone; it never runs the run alongside it."""
    from harness.sweep.lock import HOST, proc_start

    spec = study(tmp_path, suite, "orphan", steps=3, seeds="[0]")
    res = tmp_path / "res"
    (rid,) = run_ids(spec)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        wait_for(lambda: proc_start(orphan.pid), what="the stand-in worker")
        store = ResultsStore(res / "store")
        store.write_run({"run_id": rid, "study": "orphan", "seed": 0, "status": "running", "started": None,
                         "job": {"executor": "local", "host": HOST, "pid": orphan.pid,
                                 "pid_start": proc_start(orphan.pid), "attempt": 1}})
        log = tmp_path / "sweep.log"
        with log.open("w") as f:
            drv = subprocess.Popen([sys.executable, "-m", "harness.sweep", str(spec), "--results", str(res),
                                    "--no-progress", "--no-report", "--poll", "0.3"], cwd=ROOT, stdout=f,
                                   stderr=subprocess.STDOUT, text=True)
            wait_for(lambda: "attached" in log.read_text(), what="the driver to attach")
            time.sleep(2)
            assert not attempts(res, rid), "the run started while the old worker still ran"
            orphan.kill()
            orphan.wait()
            assert drv.wait(timeout=240) == 0, log.read_text()
    finally:
        orphan.kill()
    out = log.read_text()
    assert "1 running" in out and "waiting for the job of a previous driver" in out, out
    assert_complete(res, "orphan", 3)


# ------------------------------------------------------------ the plain rerun finishes the study (issue 29)
def probe_study(tmp_path: Path, suite: Path, name: str, steps: int, report_to: str = "[]") -> Path:
    """Two probe runs: one without a checkpoint until it ends (checkpoint_every above its steps), one with a
    checkpoint every 40 steps."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
study: {name}
base:
  protocol: probe
  model: {{compressor: {{block: identity, spatial: {{period: 16, n_layers: 1}}}}}}
  data: {{suite: {suite}, cache_dir: {tmp_path / 'cache'}, n_frames: 8}}
  train: {{steps: {steps}, batch_size: 8, warmup_steps: 1, log_every: 5, report_to: {report_to}}}
  eval: {{batch_size: 8}}
grid:
  train.checkpoint_every: [100000, 40]
seeds: [0]
suites: [mia_compress]
""")
    return p


def lines(res: Path, rid: str) -> list[str]:
    p = res / "runs" / rid / "metrics.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def test_workers_killed_before_and_after_their_first_checkpoint_and_the_plain_rerun(tmp_path, compress_suite,
                                                                                    monkeypatch):
    """Two probe runs write config.json and metrics as they go; one is SIGKILLed before any checkpoint, the
    other after its first. Both are failed "killed"; the plain rerun finishes the study: the first starts
    over, the second resumes from its checkpoint and keeps its earlier steps, every step once. W&B
    (offline), MLflow and TensorBoard continue the same tracker runs."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # this process reads the file store too
    spec = probe_study(tmp_path, compress_suite, "kills", steps=150, report_to="[tensorboard, mlflow, wandb]")
    res = tmp_path / "res"
    early, late = run_ids(spec)
    drv = start(spec, res, "--max-parallel", "2")
    wait_for(lambda: len(lines(res, early)) >= 2 and running_record(res, late), what="metrics of one, a checkpoint "
             "of the other")
    assert (res / "runs" / early / "config.json").is_file() and not (res / "runs" / early / "checkpoint.pt").exists()
    trk = {rid: json.loads((res / "runs" / rid / "trackers.json").read_text())["runs"] for rid in (early, late)}
    store = ResultsStore(res / "store")
    for rid in (early, late):
        os.kill(store.read_run(rid)["job"]["pid"], signal.SIGKILL)
    before = lines(res, late)
    rc, out = finish(drv)
    assert rc == 1, out
    for rid, then in ((early, "starts over on the next run of the sweep (it had no checkpoint yet)"),
                      (late, "resumes from")):
        rec = store.read_run(rid)
        assert rec["killed"] and rec["resumable"] and rec["kills"] == 1 and then in rec["reason"], rec
        assert rec["reason"].startswith("killed by SIGKILL")
    assert "run the same command again to run them again" in out, out

    rc, out = finish(start(spec, res, "--max-parallel", "2"))  # the plain rerun
    assert rc == 0 and "2 resume" in out, out
    assert_complete(res, "kills", 150, executions=2)
    for rid in (early, late):
        first, second = attempts(res, rid)
        assert first["killed"].startswith("killed by SIGKILL") and "killed" not in second
    assert store.read_run(early)["extra"]["train_resumed_from"] == 0
    resumed = int(store.read_run(late)["extra"]["train_resumed_from"])
    assert resumed >= 40 and resumed % 40 == 0
    kept = [ln for ln in before if json.loads(ln)["step"] <= resumed]
    assert lines(res, late)[: len(kept)] == kept  # the steps before the checkpoint, kept as they were

    for rid in (early, late):  # the same tracker runs, continued
        assert json.loads((res / "runs" / rid / "trackers.json").read_text())["runs"] == trk[rid]
        wid = trk[rid]["wandb"]["id"]
        assert len(list((res / "trackers" / "wandb" / "wandb").glob(f"offline-run-*-{wid}"))) == 2  # one W&B id
        ml = trk[rid]["mlflow"]
        client = MlflowClient(tracking_uri=ml["uri"])
        ml_steps = [m.step for m in client.get_metric_history(ml["run_id"], "train/loss")]
        assert ml_steps == list(range(5, 151, 5)) and client.get_run(ml["run_id"]).info.status == "FINISHED"
        acc = EventAccumulator(trk[rid]["tensorboard"]["logdir"], size_guidance={"scalars": 0})
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/loss")] == list(range(5, 151, 5))  # the killed steps purged
    assert len(MlflowClient(tracking_uri=trk[late]["mlflow"]["uri"]).search_runs(
        [trk[late]["mlflow"]["experiment_id"]])) == 2  # one MLflow run per harness run


KILL_SELF = '''
import os, signal

def body(cfg, run_dir):
    """A job that is killed from outside every time (as by the OOM killer)."""
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_run_killed_every_time_is_failed_with_the_count(tmp_path, suite, monkeypatch):
    """The plain rerun runs a killed run again until it was killed --max-attempts (3) times; then it is
    failed with the count; --retry-failed runs it once more, and the count goes on (4)."""
    from harness.sweep import run_sweep

    (tmp_path / "killself.py").write_text(KILL_SELF)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT)]))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = study(tmp_path, suite, "oom", seeds="[0]")
    res, log = tmp_path / "res", []
    kw = dict(results=res, executor="local", progress=False, report=False, log=log.append, body="killself:body",
              poll_s=0.2)
    (rid,) = run_ids(spec)
    for n in (1, 2, 3):
        log.clear()
        out = run_sweep(spec, **kw)
        assert out.exit_code == 1 and f"summary: 1 {'submit' if n == 1 else 'resume'}  ->" in "\n".join(log), log
        rec = ResultsStore(res / "store").read_run(rid)
        assert rec["killed"] and rec["kills"] == n and rec["reason"].startswith("killed by SIGKILL"), rec
    log.clear()
    out = run_sweep(spec, **kw)  # the plain rerun: past the bound, nothing runs
    (run,) = out.plan.runs
    assert run.action == "failed" and out.exit_code == 1
    assert run.reason.startswith("killed 3 times in 3 attempt(s), the --max-attempts limit of 3; last: killed by "
                                 "SIGKILL"), run.reason
    assert "--retry-failed" in run.reason and "nothing to run" in "\n".join(log)
    log.clear()
    run_sweep(spec, retry_failed=True, **kw)
    assert "summary: 1 retry  ->" in "\n".join(log), log
    rec = ResultsStore(res / "store").read_run(rid)
    assert rec["kills"] == 4 and len(attempts(res, rid)) == 4 and all(a["killed"] for a in attempts(res, rid))
    (run,) = run_sweep(spec, dry_run=True, **kw).plan.runs
    assert run.action == "failed" and run.reason.startswith("killed 4 times in 4 attempt(s)"), run.reason
