"""Resume: SIGKILL a local sweep (driver and jobs) mid-way; the same command then finishes the study
with exactly the expected records: finished runs are not rerun, the interrupted ones resume from
their checkpoint, and no result is duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.data.synthetic import SuiteSpec, make_suite
from harness.store import ResultsStore
from harness.sweep.plan import plan_study
from harness.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_sigkill_then_rerun_completes_exactly(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    make_suite(suite, SuiteSpec(n_train=24, n_val=0, n_test=24, frames_long=16, frames_dense=16), workers=1,
               progress=False)
    spec = tmp_path / "resume.yaml"
    spec.write_text(f"""
study: resume
base:
  train: {{steps: 40, batch_size: 4, warmup_steps: 1, checkpoint_every: 4, log_every: 4}}
  eval: {{limit: 4}}
  data: {{suite: {suite}, cache_dir: {tmp_path / 'cache'}}}
grid:
  model.compressor.block: [identity, conv]
seeds: [0, 1]
""")
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "harness.sweep", str(spec), "--results", str(res), "--max-parallel", "2",
           "--no-progress", "--no-report"]
    store = ResultsStore(res / "store")
    expected = [r.run_id for r in plan_study(load_spec(spec)).runs]

    # 1. start the sweep in its own process group; kill everything once one run is done and another
    #    has written a checkpoint
    log = (tmp_path / "first.log").open("w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            recs = {rid: store.read_run(rid) for rid in expected}
            done = [rid for rid, r in recs.items() if r and r["status"] == "done"]
            mid = [rid for rid, r in recs.items() if r and r["status"] == "running"
                   and (res / "runs" / rid / "checkpoint.pt").is_file()]
            if done and mid:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached a killable state\n" + (tmp_path / "first.log").read_text())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    time.sleep(0.5)
    before = {rid: store.read_run(rid) for rid in expected}
    finished_before = {rid: r for rid, r in before.items() if r and r["status"] == "done"}
    interrupted = [rid for rid, r in before.items() if r and r["status"] == "running"]
    assert finished_before and interrupted
    resumable = [rid for rid in interrupted if (res / "runs" / rid / "checkpoint.pt").is_file()]
    assert resumable

    # 2. the same command again: plan says skip / resume / submit, and the study completes
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(finished_before)} skip" in r.stdout and f"{len(interrupted)} resume" in r.stdout

    # exactly the expected records: one per run, all done, nothing else in the store
    assert store.run_ids() == sorted(expected)
    after = {rid: store.read_run(rid) for rid in expected}
    assert all(rec["status"] == "done" for rec in after.values())
    for rid, rec in finished_before.items():  # finished runs were not rerun
        assert after[rid] == rec
    for rid in resumable:  # interrupted runs continued from their checkpoint
        summary = json.loads((res / "runs" / rid / "train_summary.json").read_text())
        assert summary["resumed_from"] > 0 and summary["steps"] == 40
        assert after[rid]["job"]["attempt"] == 2
    df = store.records("resume")
    assert not df.duplicated(["run_id", "task", "metric"]).any()
    n_metrics = {rid: len(rec["metrics"]) for rid, rec in after.items()}
    assert len(df) == sum(n_metrics.values()) and set(df.run_id) == set(expected)

    # 3. and once more: nothing to do
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "nothing to run" in r.stdout
    assert {rid: store.read_run(rid) for rid in expected} == after
