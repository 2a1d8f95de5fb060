"""End to end: ``python -m harness.sweep`` with the real train/eval on a tiny suite (local and debug
executors), the failure path, dry runs, compute profiles and the Slurm job script."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.data.synthetic import SuiteSpec, make_suite
from harness.store import ResultsStore
from harness.sweep import run_sweep
from harness.sweep.executors import SlurmExecutor, local_gpu_parameters, parse_sbatch_options
from harness.sweep.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "mia"
    make_suite(out, SuiteSpec(n_train=24, n_val=0, n_test=24, frames_long=16, frames_dense=16), workers=1,
               progress=False)
    return out


def study(tmp_path: Path, suite: Path, name: str = "mini", extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
study: {name}
description: tiny end-to-end study
base:
  train: {{steps: 3, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, log_every: 1}}
  eval: {{limit: 4}}
  data: {{suite: {suite}, cache_dir: {tmp_path / 'cache'}}}
grid:
  model.compressor.block: [identity, conv]
seeds: [0, 1]
suites: [mia_long, mia_dense]
labels: {{model.compressor.block: block}}
report: {{x: block, figures: [grouped_bars]}}
{extra}
""")
    return p


def sweep_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.sweep", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_local_sweep_end_to_end(tmp_path: Path, suite: Path) -> None:
    spec = study(tmp_path, suite)
    res = tmp_path / "res"
    r = sweep_cli(str(spec), "--results", str(res), "--max-parallel", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 submit" in r.stdout, r.stdout
    store = ResultsStore(res / "store")
    index = store.read_study("mini")
    assert index["axes"] == {"block": "model.compressor.block"} and index["spec_path"] == str(spec)
    assert len(index["runs"]) == 4 and {e["label"] for e in index["runs"]} == {"block=identity", "block=conv"}
    recs = [store.read_run(e["run_id"]) for e in index["runs"]]
    for rec in recs:
        assert rec["status"] == "done", rec.get("reason")
        assert rec["git_commit"] != "" and "torch" in rec["versions"] and rec["wall_time_s"] > 0
        assert rec["tokens"]["llm_visual"] > 0 and rec["job"]["executor"] == "local"
        assert rec["job"]["device"] == "cpu"  # the local profile hides GPUs; costs name their device
        assert {"mia_long", "mia_dense"} <= {m["task"] for m in rec["metrics"]}
        assert (res / "runs" / rec["run_id"] / "checkpoint.pt").is_file()
        assert Path(rec["log_path"]).is_file()  # the submitit log of the job
    # never more than --max-parallel runs at once
    iv = [(dt.datetime.fromisoformat(x["started"]), dt.datetime.fromisoformat(x["finished"])) for x in recs]
    assert max(sum(s <= t < f for s, f in iv) for t, _ in iv) <= 2
    # the report: table with mean ± CI over seeds, and a figure
    rep = res / "reports" / "mini"
    table = (rep / "table_main.md").read_text()
    assert "±" in table and "identity" in table and "conv" in table
    assert list(rep.glob("fig_*.png"))
    assert "report:" in r.stdout
    # the progress view (plain lines without a terminal): counts, each finished run named
    # (the first line's queued/running split depends on how fast the first jobs start; the last does not)
    assert "queued 0 | running 0 | done 4 | failed 0" in r.stderr and "done    block=identity seed=0" in r.stderr
    assert "sweep finished" in r.stdout and "slowest runs:" in r.stdout
    # rerun: nothing to do, nothing rewritten
    before = {p.name: p.read_text() for p in (res / "store" / "runs").iterdir()}
    r2 = sweep_cli(str(spec), "--results", str(res), "--no-report")
    assert r2.returncode == 0, r2.stderr
    assert "4 skip" in r2.stdout and "nothing to run" in r2.stdout, r2.stdout + r2.stderr
    assert before == {p.name: p.read_text() for p in (res / "store" / "runs").iterdir()}


def test_failed_run_is_recorded_and_only_retried_on_request(tmp_path: Path, suite: Path) -> None:
    spec = study(tmp_path, suite, "boom")
    res = tmp_path / "res"
    kw = dict(results=res, executor="debug", report=False, progress=False, log=lambda s: None)
    sets = ["train.lr=1.0e+30", "train.warmup_steps=0", "grid.model.compressor.block=[identity]", "seeds=[0]"]
    out = run_sweep(spec, sets, **kw)
    assert out.exit_code == 1 and out.counts == {"failed": 1}
    rid = out.plan.runs[0].run_id
    store = ResultsStore(res / "store")
    rec = store.read_run(rid)
    assert rec["status"] == "failed" and rec["reason"].startswith("TrainingDiverged")
    assert "Traceback" in Path(rec["log_path"]).read_text() and rec["job"]["attempt"] == 1
    assert store.records("boom").iloc[0].reason == rec["reason"]
    # rerun without --retry-failed: left alone
    out = run_sweep(spec, sets, **kw)
    assert out.plan.runs[0].action == "failed" and store.read_run(rid)["job"]["attempt"] == 1
    # with it: run again (and fails again: same config)
    out = run_sweep(spec, sets, retry_failed=True, **kw)
    assert out.plan.runs[0].action == "retry" and store.read_run(rid)["job"]["attempt"] == 2


def test_dry_run_runs_and_writes_nothing(tmp_path: Path, suite: Path) -> None:
    spec = study(tmp_path, suite, "dry")
    lines: list[str] = []
    out = run_sweep(spec, [], results=tmp_path / "res", dry_run=True, log=lines.append)
    assert len(out.plan.to_submit) == 4
    text = "\n".join(lines)
    assert "4 submit" in text and "estimated cost" in text and "dry run" in text
    assert not (tmp_path / "res").exists()


def test_bad_spec_exit_code_and_message(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("study: bad\ngrid: {model.compressor.pooling: [maxx]}\n")
    r = sweep_cli(str(p), "--results", str(tmp_path / "res"))
    assert r.returncode == 2
    assert f"{p}: grid.model.compressor.pooling[0]: unknown value 'maxx' (did you mean 'max'?)" in r.stderr
    assert not (tmp_path / "res").exists()


def test_profiles(tmp_path: Path) -> None:
    assert load_profile("local").executor == "local"
    assert load_profile("debug").executor == "debug"
    lc = load_profile("localcluster")
    assert lc.executor == "slurm" and lc.partition == "debug" and lc.gpus_per_task == 0
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        load_profile("locl")
    (tmp_path / "x.yaml").write_text("executor: slurm\ncpus_per_tsk: 2\n")
    with pytest.raises(ConfigError) as ei:
        load_profile("x", tmp_path)
    assert str(tmp_path / "x.yaml") in str(ei.value) and "did you mean 'cpus_per_task'" in str(ei.value)
    with pytest.raises(ConfigError, match="unsafe profile name"):
        load_profile("../x")


def test_sbatch_options_parse() -> None:
    assert parse_sbatch_options(["--exclusive", "--constraint=a100", "#SBATCH --nodes=1"]) == {
        "exclusive": True, "constraint": "a100", "nodes": "1"}
    with pytest.raises(ValueError, match="additional_sbatch"):
        parse_sbatch_options(["exclusive"])


def test_slurm_job_script_from_profile(tmp_path: Path, slurm_client: str) -> None:
    """The job script submitit writes from the paper profile (needs Slurm's client tools, no cluster)."""
    prof = load_profile("paper")
    ex = SlurmExecutor(prof, ResultsStore(tmp_path), tmp_path / "logs", study="bt").executor("bt")
    ex.parameters["map_count"] = 10
    text = ex._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --array=0-9%4", "#SBATCH --exclusive", "#SBATCH --time=2880",
                 "#SBATCH --qos=normal", "export NCCL_ASYNC_ERROR_HANDLING=1"):
        assert line in text, line
    # the data-preparation job is one process
    one = SlurmExecutor(prof, ResultsStore(tmp_path), tmp_path / "logs", study="bt").executor("bt-data", tasks=1)
    one.parameters["map_count"] = 1
    assert "#SBATCH --ntasks-per-node=1" in one._make_submission_file_text("python x", "uid")


@pytest.mark.slurm
def test_slurm_sweep_localcluster(tmp_path: Path, suite: Path, slurm_cluster: object) -> None:
    """Both variants as a job array on the local cluster (conftest's ``slurm_cluster``: skips without one,
    fails in CI)."""
    spec = study(tmp_path, suite, "onslurm")
    res = tmp_path / "res"
    r = sweep_cli(str(spec), "--executor", "slurm", "--profile", "localcluster", "--results", str(res),
                  "--set", "seeds=[0]", "--poll", "2", "--no-report", timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    store = ResultsStore(res / "store")
    recs = [store.read_run(e["run_id"]) for e in store.read_study("onslurm")["runs"]]
    assert [x["status"] for x in recs] == ["done", "done"]
    assert all(x["job"]["executor"] == "slurm" and x["job"]["job_id"] for x in recs)
    assert json.dumps(recs)


@pytest.mark.parametrize(("gpus", "parent", "seen"), [(0, "3,5", ""), (1, "3,5", "3"), (2, None, "0,1")])
def test_local_runs_see_the_profiles_gpus(tmp_path, monkeypatch, gpus, parent, seen):
    """A local job's CUDA_VISIBLE_DEVICES, through the real submitit LocalExecutor: the "local" profile
    hides GPUs (jobs train on the CPU), "localgpu" shows the first one (of the driver's, when set)."""
    import submitit

    if parent is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", parent)
    prof = load_profile("localgpu")
    prof.gpus_per_task = gpus
    ex = submitit.LocalExecutor(folder=tmp_path)
    ex.update_parameters(timeout_min=2, **local_gpu_parameters(prof))
    # os.getenv is pickled by reference, so it reads the job process's environment
    assert ex.submit(functools.partial(os.getenv, "CUDA_VISIBLE_DEVICES", "<unset>")).result() == seen


def test_local_gpu_profile_checks_the_drivers_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    prof = load_profile("localgpu")
    prof.gpus_per_task = 2
    with pytest.raises(ConfigError, match="gpus_per_task"):
        local_gpu_parameters(prof)
