"""The sweep against a real Slurm scheduler (the single-node cluster of slurm/local/ in CI).

Every test drives the real CLI (``python -m harness.sweep ... --executor slurm --profile localcluster``)
as a subprocess, the way a user does, on a tiny synthetic suite and a few training steps:

* the block-type study runs as one Slurm job array and gives the same run ids and the same metrics
  as the local executor;
* a failing run is recorded as ``failed`` with its Slurm log path, and the other runs finish;
* ``scontrol requeue`` of a running training job (what preemption does) resumes it from its checkpoint,
  and the store ends with one completed run, not two;
* Ctrl-C (SIGINT) on the driver cancels its Slurm jobs, and the same command afterwards resumes them;
* a SIGKILLed driver leaves its array to Slurm, and the immediate rerun waits for it (no resubmission).

The ``slurm_cluster`` fixture (tests/conftest.py) skips these tests where no cluster answers, and fails
them under CI=true. The profile tests at the bottom need no cluster.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from harness.config import ComputeProfile, build
from harness.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "ablations" / "block_type.yaml"

# A few optimizer steps on 4 frames: each run is a few seconds of CPU (most of it Python start-up).
# (block_type.yaml ships the probe protocol on the compress suite: these sweeps run the LMM on a v1 suite)
TINY = ["seeds=[0]", "suites=[mia_long]", "protocol=lmm", "data.synthetic={}", "data.n_frames=4",
        "train.steps=3", "train.batch_size=2", "train.warmup_steps=1", "train.log_every=1",
        "train.checkpoint_every=1", "eval.batch_size=8"]


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 16/4/8-item synthetic suite (two long families, 16 frames of 32 px) and its feature cache dir,
    shared by the module's sweeps (the first sweep's data job fills the cache)."""
    root = tmp_path_factory.mktemp("slurm_data")
    suite = root / "suite"
    subprocess.run([sys.executable, "-m", "harness.data", "make-synthetic", "--out", str(suite), "--n-train", "16",
                    "--n-val", "4", "--n-test", "8", "--frames", "16", "--size", "32", "--families",
                    "needle_what", "count", "--workers", "1", "--quiet"], check=True, capture_output=True,
                   timeout=180)
    return {"data.suite": str(suite), "data.cache_dir": str(root / "cache")}


def sweep_cmd(results: Path, overrides: list[str], executor: str = "slurm") -> list[str]:
    cmd = [sys.executable, "-m", "harness.sweep", str(SPEC), "--results", str(results), "--no-report",
           "--no-progress", "--poll", "1", "--executor", executor]
    if executor == "slurm":
        cmd += ["--profile", "localcluster"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def run_sweep(results: Path, overrides: list[str], executor: str = "slurm", timeout: float = 300,
              ) -> subprocess.CompletedProcess[str]:
    """Run the sweep CLI to the end in ``results.parent`` (Slurm's working dir for the jobs)."""
    return subprocess.run(sweep_cmd(results, overrides, executor), cwd=results.parent, capture_output=True,
                          text=True, timeout=timeout)


def start_sweep(results: Path, overrides: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start the sweep CLI in the background, its output to ``log``."""
    fh = open(log, "wb")  # noqa: SIM115 - the child owns it; closed when the test's process ends
    return subprocess.Popen(sweep_cmd(results, overrides), cwd=results.parent, stdout=fh, stderr=subprocess.STDOUT)


def outcome(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}"


def wait_until(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> Any:
    """Poll ``cond()`` every 0.5 s until it returns something truthy; fail with ``what`` on timeout or if
    ``proc`` exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")


def records(results: Path) -> dict[str, dict[str, Any]]:
    store = ResultsStore(results / "store")
    return {rid: store.read_run(rid) for rid in store.run_ids()}


def squeue(job: str) -> list[str]:
    """States of the jobs (or array tasks) of ``job`` still known to slurmctld's queue."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.split() if out.returncode == 0 else []


def sacct_states(job: str) -> list[str]:
    """Every state sacct recorded for ``job`` (``-D``: requeued attempts too), in order."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "State"], capture_output=True,
                         text=True, timeout=30)
    return [s.split()[0] for s in out.stdout.split("\n") if s.strip()]


def comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the executor: status, seed, config, token counts, metrics."""
    metrics = sorted((m["task"], m["metric"], round(float(m["value"]), 6), m.get("n")) for m in rec["metrics"])
    return {"status": rec["status"], "seed": rec["seed"], "config": rec["config"], "tokens": rec["tokens"],
            "metrics": metrics, "label": rec.get("label")}


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.slurm
@pytest.mark.slow
def test_block_type_slurm_array_matches_local(slurm_cluster, tiny_suite, tmp_path):
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()]
    res = run_sweep(tmp_path / "slurm", over)
    assert res.returncode == 0, outcome(res)
    loc = run_sweep(tmp_path / "local", over, executor="local")
    assert loc.returncode == 0, outcome(loc)

    local, on_slurm = records(tmp_path / "local"), records(tmp_path / "slurm")
    n = len(yaml.safe_load(SPEC.read_text())["grid"]["model.compressor.block"])
    assert len(local) == n, f"block_type has {n} blocks x 1 seed; the local store has {sorted(local)}"
    assert sorted(on_slurm) == sorted(local), "the two executors planned different run ids"
    for rid, rec in on_slurm.items():
        assert rec["status"] == "done", f"{rid}: {rec.get('reason')}"
        assert comparable(rec) == comparable(local[rid]), f"run {rid} differs between slurm and local"
        assert rec["metrics"] and all(math.isfinite(m["value"]) for m in rec["metrics"])
        assert (rec["job"]["executor"], local[rid]["job"]["executor"]) == ("slurm", "local")
        assert Path(rec["job"]["log_out"]).is_file(), rec["job"]
    # one job array: every run is a task <array id>_<index> of the same submission
    tasks = sorted(rec["job"]["job_id"] for rec in on_slurm.values())
    assert all(re.fullmatch(r"\d+_\d+", t) for t in tasks), f"not array tasks: {tasks}"
    arrays = {t.split("_")[0] for t in tasks}
    assert len(arrays) == 1, f"the runs were not one job array: {tasks}"
    assert sorted(int(t.split("_")[1]) for t in tasks) == list(range(n))
    if slurm_cluster.accounting:  # the scheduler's own account of the array
        array = arrays.pop()
        wait_until(lambda: sacct_states(array).count("COMPLETED") == n, 60, f"sacct: array {array} COMPLETED")


@pytest.mark.slurm
@pytest.mark.slow
def test_failed_job_is_recorded_with_its_slurm_log_and_the_sweep_goes_on(slurm_cluster, tiny_suite, tmp_path):
    # lr=nan passes validation (it is a float) but the loss turns NaN at the second step: a real
    # failure inside a running Slurm job, next to a healthy run in the same array
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()] + [
        "grid.model.compressor.block=[bi_ssm]", "grid.train.lr=[0.001,.nan]"]
    res = run_sweep(tmp_path / "res", over)
    assert res.returncode == 1, "a failed run must make the sweep exit 1\n" + outcome(res)

    recs = records(tmp_path / "res")
    by_lr = {rec["config"]["train"]["lr"]: rec for rec in recs.values()}
    assert set(map(str, by_lr)) == {"0.001", "nan"}, sorted(by_lr)
    good = by_lr[0.001]
    bad = next(rec for lr, rec in by_lr.items() if math.isnan(lr))
    assert good["status"] == "done" and good["metrics"], "the healthy run must finish despite its neighbour"
    assert bad["status"] == "failed"
    assert "nan" in bad["reason"].lower(), bad["reason"]
    # the record names the Slurm log of the array task that ran it
    log = Path(bad["log_path"])
    assert log.is_file(), f"log_path {log} does not exist"
    assert re.fullmatch(r"\d+_\d+", bad["job"]["job_id"]), bad["job"]
    assert bad["job"]["job_id"] in log.name, f"{log} is not the log of Slurm job {bad['job']['job_id']}"
    logs = log.read_text() + Path(bad["job"]["log_out"]).read_text()
    assert bad["run_id"] in logs and "Traceback" in logs, logs[-3000:]
    assert bad["run_id"] in res.stdout + res.stderr, "the driver must name the failed run"


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_job_resumes_from_its_checkpoint(slurm_cluster, tiny_suite, tmp_path):
    # submitit ignores the SIGTERM of a requeue, so the job trains on for KillWait (2 s) until SIGKILL, which
    # slurmd delivered 4+ s late once: enough steps of 4 items (~15 s on 2 idle cores after the requeue) that
    # it cannot finish in that grace and must really resume (60 steps did finish there, once, in CI)
    steps = 200
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()] + [
        "grid.model.compressor.block=[bi_ssm]", f"train.steps={steps}", "train.batch_size=4"]
    results, log = tmp_path / "res", tmp_path / "sweep.log"
    proc = start_sweep(results, over, log)
    try:
        def running_with_checkpoint() -> dict[str, Any] | None:
            for rid, rec in records(results).items():
                # requeue as soon as the first checkpoint is there, well before training ends
                if rec["status"] == "running" and (results / "runs" / rid / "checkpoint.pt").is_file():
                    return rec
            return None

        rec = wait_until(running_with_checkpoint, 240, "a checkpoint of the running job", proc, log)
        job_id = rec["job"]["job_id"]
        # what a preemption does: the scheduler kills the job and puts it back in the queue
        req = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=30)
        assert req.returncode == 0, f"scontrol requeue {job_id}: {req.stderr}"
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert rc == 0, log.read_text()[-4000:]

    recs = records(results)
    assert len(recs) == 1, f"one run, one record: {sorted(recs)}"
    (final,) = recs.values()
    assert final["status"] == "done", final.get("reason")
    job_log = Path(final["job"]["log_out"]).read_text()[-2000:]
    assert final["job"]["attempt"] == 2, \
        f"expected the job to start twice: {final['job']}; sacct: {sacct_states(job_id)}; log:\n{job_log}"
    resumed = final["extra"].get("train_resumed_from")
    assert resumed is not None and 1 <= resumed < steps, f"did not resume from a checkpoint: {final['extra']}"
    logged = [json.loads(ln)["step"] for ln in (results / "runs" / final["run_id"] / "metrics.jsonl")
              .read_text().splitlines() if ln.strip()]
    assert logged == list(range(1, steps + 1)), f"steps repeated or lost across the requeue: {logged}"
    if slurm_cluster.accounting:
        # the driver sees the result before slurmctld has finished the job: give sacct a moment
        wait_until(lambda: sacct_states(job_id)[-1:] == ["COMPLETED"], 60, f"sacct to show {job_id} COMPLETED")
        states = sacct_states(job_id)
        assert states[:-1] and set(states[:-1]) == {"REQUEUED"}, f"sacct states of {job_id}: {states}"


@pytest.mark.slurm
@pytest.mark.slow
def test_sigkill_of_the_driver_then_the_rerun_waits_for_its_slurm_task(slurm_cluster, tiny_suite, tmp_path):
    """The driver is SIGKILLed with its array in Slurm's hands: the task's record names it from the moment
    it is queued, so the immediate rerun finds it in squeue and waits for it (one execution, no second
    submission)."""
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()] + [
        "grid.model.compressor.block=[bi_ssm]", "train.steps=40", "train.batch_size=4"]
    results, log = tmp_path / "res", tmp_path / "sweep.log"
    proc = start_sweep(results, over, log)
    try:
        def queued_task() -> str | None:
            for rec in records(results).values():
                job_id = str((rec.get("job") or {}).get("job_id") or "")
                if rec["status"] == "running" and job_id:  # from submission on (a 1-task array is a plain job)
                    return job_id
            return None

        job_id = wait_until(queued_task, 240, "the Slurm task's record", proc, log)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert squeue(job_id), f"task {job_id} should outlive its driver"
    res = run_sweep(results, over)
    assert res.returncode == 0, outcome(res)
    assert "attached" in res.stdout + res.stderr and "submitted Slurm array" not in res.stdout + res.stderr, \
        outcome(res)
    (final,) = records(results).values()
    assert final["status"] == "done" and final["job"]["job_id"] == job_id, final
    lines = (results / "runs" / final["run_id"] / "attempts.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines  # one execution


@pytest.mark.slurm
@pytest.mark.slow
def test_two_task_run_trains_with_torch_distributed(slurm_cluster, tiny_suite, tmp_path):
    # a profile with tasks_per_node: 2 (the paper profile has 8, one per GPU): both tasks of the array
    # task train one run together over gloo, rank 0 evaluates and writes the one record
    prof = yaml.safe_load((REPO / "slurm" / "localcluster.yaml").read_text())
    prof.update(tasks_per_node=2, array_parallelism=1)
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    (pdir / "two_tasks.yaml").write_text(yaml.safe_dump(prof))
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()] + ["grid.model.compressor.block=[conv]"]
    cmd = sweep_cmd(tmp_path / "res", over)
    cmd[cmd.index("localcluster")] = "two_tasks"
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MAMBAMIA_PROFILES": str(pdir)})
    assert res.returncode == 0, outcome(res)
    recs = records(tmp_path / "res")
    assert len(recs) == 1, sorted(recs)
    (rec,) = recs.values()
    assert rec["status"] == "done", rec.get("reason")
    assert rec["extra"]["train_world_size"] == 2, rec["extra"]
    assert {m["task"] for m in rec["metrics"]} >= {"mia_long"}
    state = torch.load(tmp_path / "res" / "runs" / rec["run_id"] / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 3


def test_ctrl_c_cancels_the_jobs_and_the_rerun_resumes(slurm_cluster, tiny_suite, tmp_path):
    # as in the requeue test, long enough that the jobs cannot finish between the Ctrl-C and their
    # SIGKILL (driver poll + scancel + KillWait: measured 30-45 steps of 4 items go by)
    steps = 100
    over = TINY + [f"{k}={v}" for k, v in tiny_suite.items()] + [
        "grid.model.compressor.block=[bi_ssm,uni_ssm]", f"train.steps={steps}", "train.batch_size=4"]
    results, log = tmp_path / "res", tmp_path / "sweep.log"
    proc = start_sweep(results, over, log)
    try:
        def checkpointed_job() -> str | None:
            for rid, rec in records(results).items():
                if rec["status"] == "running" and (results / "runs" / rid / "checkpoint.pt").is_file():
                    return rec["job"]["job_id"]
            return None

        job_id = wait_until(checkpointed_job, 240, "a running job with a checkpoint", proc, log)
        proc.send_signal(signal.SIGINT)  # Ctrl-C on the driver
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert rc == 130, f"an interrupted sweep exits 130, got {rc}:\n{log.read_text()[-3000:]}"
    array = job_id.split("_")[0]
    # the driver cancelled its array: nothing of it stays in the queue once the kill is through
    # (tasks show COMPLETING for up to KillWait seconds; a rerun before that sees them as still running)
    wait_until(lambda: not squeue(array), 60, f"Slurm array {array} to leave the queue")
    if slurm_cluster.accounting:
        states = wait_until(lambda: [s for s in sacct_states(array) if s == "CANCELLED"], 30,
                            f"sacct to record the cancelled tasks of {array}")
        assert states
    interrupted = {rid: rec for rid, rec in records(results).items() if rec["status"] != "done"}
    assert interrupted, "the interrupt came after every run had finished: nothing left to resume"

    res = run_sweep(results, over)  # the same command again
    assert res.returncode == 0, outcome(res)
    recs = records(results)
    assert len(recs) == 2 and all(r["status"] == "done" for r in recs.values()), \
        {rid: (r["status"], r.get("reason")) for rid, r in recs.items()}
    resumed = {rid: recs[rid]["extra"].get("train_resumed_from") for rid in interrupted}
    assert any(v and v >= 1 for v in resumed.values()), f"no interrupted run resumed from its checkpoint: {resumed}"
    for rid in interrupted:
        assert recs[rid]["job"]["job_id"].split("_")[0] != array, "the rerun must submit new jobs"


# --------------------------------------------------------------------------- profiles (no cluster needed)
PROFILES = sorted(p.name for p in (REPO / "slurm").glob("*.yaml"))


@pytest.mark.parametrize("name", PROFILES + ["mycluster.yaml.example"])
def test_profile_files_build_strictly(name):
    doc = yaml.safe_load((REPO / "slurm" / name).read_text())
    prof = build(ComputeProfile, doc)
    assert set(doc) <= {f for f in ComputeProfile.__dataclass_fields__}, name
    if prof.executor == "slurm":
        assert prof.partition, f"{name}: a Slurm profile names its partition"
        assert prof.time_min >= 1 and prof.mem_gb > 0 and prof.array_parallelism >= 1


def test_required_profiles_exist_and_describe_their_targets():
    names = {p.removesuffix(".yaml") for p in PROFILES}
    assert {"local", "debug", "localcluster", "paper"} <= names
    load = {n: build(ComputeProfile, yaml.safe_load((REPO / "slurm" / f"{n}.yaml").read_text())) for n in names}
    assert load["localcluster"].executor == "slurm" and load["localcluster"].gpus_per_task == 0
    # the local cluster's node has nproc CPUs: its jobs must fit on a 2-core CI machine
    assert load["localcluster"].cpus_per_task * load["localcluster"].array_parallelism <= 2
    paper = load["paper"]
    assert paper.gpus_per_task * paper.tasks_per_node == 8, "paper: one whole 8-GPU node per run"
    assert paper.tasks_per_node == 8, "paper: one training process per GPU"
    assert (load["local"].executor, load["debug"].executor) == ("local", "debug")


def test_local_cluster_scripts_are_valid_bash():
    for script in sorted((REPO / "slurm" / "local").glob("*.sh")):
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, f"{script}: {res.stderr}"
    for script in ("install.sh", "start.sh", "stop.sh", "status.sh", "wait-idle.sh", "ci-wrap.sh"):
        assert os.access(REPO / "slurm" / "local" / script, os.X_OK), f"slurm/local/{script} is not executable"


def test_stop_and_status_with_nothing_running(tmp_path):
    """stop.sh succeeds when nothing runs (idempotent), status.sh says so with exit 1, and --purge refuses
    to delete a directory that is not a slurm/local state dir."""
    env = {**os.environ, "MAMBAMIA_SLURM_DIR": str(tmp_path / "state")}
    local = REPO / "slurm" / "local"
    for _ in range(2):
        res = subprocess.run([str(local / "stop.sh")], env=env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
    st = subprocess.run([str(local / "status.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert st.returncode == 1 and "slurmctld  not running" in st.stdout, st.stdout
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "precious.txt").write_text("keep me")
    res = subprocess.run([str(local / "stop.sh"), "--purge"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and (tmp_path / "state" / "precious.txt").is_file(), res.stderr
    bad = subprocess.run([str(local / "status.sh")], env={**env, "MAMBAMIA_SLURM_ACCOUNTING": "sqlite"},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "MAMBAMIA_SLURM_ACCOUNTING" in bad.stderr


EVAL_ONLY_BODY = '''
import time
from pathlib import Path


def body(cfg, run_dir, parent_dir=None):
    """Trains nothing: a parent at lr 0.5 fails; a child checks that its parent's files are there."""
    if not cfg.eval.parent:
        time.sleep(3)
        if cfg.train.lr == 0.5:
            raise RuntimeError("parent diverged")
        (Path(run_dir) / "model").mkdir(exist_ok=True)
        return {"metrics": [{"task": "mia_long", "metric": "acc", "value": 0.5, "n": 4}]}
    assert (Path(parent_dir) / "model").is_dir(), f"the child started before its parent: {parent_dir}"
    (Path(run_dir) / "child_ran").write_text("yes")
    return {"metrics": [{"task": "mia_long", "metric": "acc", "value": 0.4, "n": 4}]}
'''


@pytest.mark.slurm
@pytest.mark.slow
def test_evaluation_only_children_follow_their_parent_s_slurm_job(slurm_cluster, tiny_suite, tmp_path):
    # two vanilla parents (lr 1e-3 succeeds, lr 0.5 fails), two reducer children each: a child is queued
    # with --dependency=afterok on its parent's job; a failed parent's children are cancelled by Slurm and
    # recorded failed with the parent's reason, never run
    (tmp_path / "evalbody.py").write_text(EVAL_ONLY_BODY)
    spec = tmp_path / "ev.yaml"
    spec.write_text(f"""
study: ev
base: {{data: {{suite: {tiny_suite['data.suite']}, cache_dir: {tiny_suite['data.cache_dir']}, n_frames: 4}},
       eval: {{parent: vanilla}}, model: {{compressor: {{name: random}}}}, train: {{steps: 2}}}}
grid: {{train.lr: [0.001, 0.5], model.compressor.name: [random, uniform_pool], model.visual_tokens: [8]}}
suites: [mia_long]
""")
    cmd = [sys.executable, "-m", "harness.sweep", str(spec), "--results", str(tmp_path / "res"), "--no-report",
           "--no-progress", "--poll", "1", "--executor", "slurm", "--profile", "localcluster", "--job",
           "evalbody:body"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 1, outcome(res)
    assert "after job" in res.stdout + res.stderr, "children queue behind their parent's Slurm job\n" + outcome(res)
    recs = records(tmp_path / "res")
    parents = {r["config"]["train"]["lr"]: r for r in recs.values() if not r["config"]["eval"]["parent"]}
    assert parents[0.001]["status"] == "done" and parents[0.5]["status"] == "failed"
    for r in recs.values():
        if not r["config"]["eval"]["parent"]:
            continue
        ran = (tmp_path / "res" / "runs" / r["run_id"] / "child_ran").exists()
        if r["config"]["train"]["lr"] == 0.001:
            assert r["status"] == "done" and ran, r.get("reason")
        else:
            assert r["status"] == "failed" and not ran
            assert r["reason"].startswith(f"parent run {parents[0.5]['run_id']} failed: RuntimeError: parent "
                                          "diverged"), r["reason"]
