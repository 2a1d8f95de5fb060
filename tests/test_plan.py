"""Planning (harness.sweep.plan): stable run ids, duplicates, status against the store, speed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import RunConfig, build, config_hash, hash_view, to_dict
from harness.store import ResultsStore
from harness.sweep import _inside
from harness.sweep.plan import job_alive, plan_study, resolve
from harness.sweep.spec import load_spec


def spec_file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_run_id_is_config_hash_and_ignores_key_order_and_defaults(tmp_path: Path) -> None:
    a = spec_file(tmp_path, """
study: a
base: {train: {steps: 50, lr: 0.002}, model: {compressor: {pooling: mean}}}
grid: {model.compressor.block: [conv, identity]}
seeds: [0, 1]
""", "a.yaml")
    # same study written differently: other key order, defaults spelled out, another study name
    b = spec_file(tmp_path, """
seeds: [0, 1]
grid: {model.compressor.block: [conv, identity]}
base:
  model: {compressor: {pooling: mean, gated: true, d_model: 64}, projector: mlp2x_gelu}
  train: {lr: 0.002, steps: 50, batch_size: 8}
study: b
""", "b.yaml")
    pa, pb = plan_study(load_spec(a)), plan_study(load_spec(b))
    assert [r.run_id for r in pa.runs] == [r.run_id for r in pb.runs]
    for r in pa.runs:
        cfg = build(RunConfig, r.config)
        assert r.run_id == config_hash(cfg)
        assert r.config == to_dict(cfg)
        assert cfg.seed == r.seed
    assert len({r.run_id for r in pa.runs}) == 4
    # a different value gives a different id
    pc = plan_study(load_spec(a, ["train.steps=51"]))
    assert not {r.run_id for r in pc.runs} & {r.run_id for r in pa.runs}


def test_run_id_of_resolved_dict_equals_config_hash() -> None:
    cfg = build(RunConfig, {"model": {"compressor": {"block": "transformer", "taa": {"enabled": True}}},
                            "train": {"stages": [{"start_step": 0}, {"start_step": 5, "train_modules": ["llm"]}]},
                            "seed": 3})
    full, view = resolve(to_dict(cfg))
    assert full == to_dict(cfg) and hash_view(view) == config_hash(cfg)
    # the view leaves out what does not change behaviour (start_frac, resolved into start_step)
    assert "start_frac" in full["train"]["stages"][0] and "start_frac" not in view["train"]["stages"][0]


@pytest.mark.parametrize("overrides,run_id", [
    ({}, "63f9b22acf51"),
    ({"model": {"compressor": {"block": "uni_ssm", "pooling": "gpa"}}, "seed": 2}, "a671cce42c5b"),
    ({"model": {"compressor": {"block": "transformer", "pos_embed": "none"}}}, "2425e19e38d0"),
])
def test_run_ids_survive_new_switches_that_keep_the_old_behaviour(overrides, run_id) -> None:
    # ids computed by the code before `pos_embed` existed (commit 08a4c52): stores written then must still
    # be found, so a finished run is not trained again. Change these only when behaviour changes.
    assert config_hash(build(RunConfig, overrides)) == run_id


def test_a_switch_that_changes_behaviour_changes_the_run_id() -> None:
    old = config_hash(build(RunConfig, {"model": {"compressor": {"block": "transformer", "pos_embed": "none"}}}))
    assert config_hash(build(RunConfig, {"model": {"compressor": {"block": "transformer"}}})) != old
    ssm = config_hash(build(RunConfig, {}))
    assert config_hash(build(RunConfig, {"model": {"compressor": {"pos_embed": "sincos"}}})) != ssm
    assert config_hash(build(RunConfig, {"model": {"compressor": {"pos_embed": "none"}}})) == ssm
    # start_frac resolves into start_step at build: the same schedule is the same run
    st = [{"start_step": 0, "families": ["colour"]}]
    by_step = build(RunConfig, {"train": {"steps": 200, "stages": [*st, {"start_step": 100}]}})
    by_frac = build(RunConfig, {"train": {"steps": 200, "stages": [*st, {"start_frac": 0.5}]}})
    other = build(RunConfig, {"train": {"steps": 200, "stages": [*st, {"start_frac": 0.25}]}})
    assert config_hash(by_frac) == config_hash(by_step) != config_hash(other)


def test_duplicates_collapse(tmp_path: Path) -> None:
    p = spec_file(tmp_path, """
study: d
grid:
  model.compressor.block: [conv, conv, identity]
  train.lr: [0.001, 1.0e-3]
seeds: [0, 1]
""")
    plan = plan_study(load_spec(p))
    assert len(plan.runs) == 4  # 2 blocks x 2 seeds
    assert plan.n_duplicates == 3 * 2 * 2 - 4
    assert "duplicate point(s) collapsed" in plan.describe()


def test_planning_a_10000_run_grid(tmp_path: Path) -> None:
    """Correctness of a large plan; its speed is measured by benchmarks/plan_speed.py."""
    p = spec_file(tmp_path, """
study: big
grid:
  model.compressor.block: [bi_ssm, uni_ssm, transformer, conv, identity]
  model.compressor.pooling: [weighted, mean, max, query, attention]
  model.compressor.spatial.period: [2, 4, 8, 16]
  train.lr: [0.001, 0.002, 0.003, 0.004, 0.005]
  model.compressor.budget: [0, 16, 32, 64]
seeds: [0, 1, 2, 3, 4]
""")
    plan = plan_study(load_spec(p), ResultsStore(tmp_path / "store"))
    assert len(plan.runs) == len({r.run_id for r in plan.runs}) == 10_000


def _record(store: ResultsStore, run_id: str, status: str, **kw: object) -> None:
    store.write_run({"run_id": run_id, "status": status, "seed": 0, "config": {}, **kw})


def test_status_and_actions_from_the_store(tmp_path: Path) -> None:
    p = spec_file(tmp_path, "study: s\ngrid: {model.compressor.block: [conv, identity, transformer]}\nseeds: [0, 1]\n")
    spec = load_spec(p)
    store = ResultsStore(tmp_path / "store")
    ids = [r.run_id for r in plan_study(spec).runs]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _record(store, ids[0], "done", wall_time_s=120.0)
    _record(store, ids[1], "failed", reason="TrainingDiverged: loss=nan", log_path="/x/err.log")
    _record(store, ids[2], "running", job={"executor": "local", "host": os.uname().nodename, "pid": dead.pid})
    _record(store, ids[3], "running", job={"executor": "local", "host": os.uname().nodename, "pid": os.getpid()})
    plan = plan_study(spec, store)
    actions = [r.action for r in plan.runs]
    assert actions == ["skip", "failed", "resume", "running", "submit", "submit"]
    assert [r.run_id for r in plan.to_submit] == [ids[2], ids[4], ids[5]]
    text = plan.describe(cpus_per_task=2, parallel=2)
    assert "1 skip, 2 submit, 1 resume, 1 failed, 1 running" in text
    assert "--retry-failed" in text and "TrainingDiverged" in text
    assert "estimated cost: ~2.0 min per run" in text and "0.20 core-h" in text
    plan = plan_study(spec, store, retry_failed=True)
    assert plan.runs[1].action == "retry" and len(plan.to_submit) == 4


def test_job_alive() -> None:
    host = os.uname().nodename
    assert job_alive({"executor": "local", "host": host, "pid": os.getpid()})
    assert not job_alive({"executor": "local", "host": "another-host", "pid": os.getpid()})
    assert not job_alive(None)
    assert not job_alive({"executor": "local", "host": host})


def test_run_dirs_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert _inside(root, root / "abc123") == root / "abc123"
    with pytest.raises(ValueError, match="outside"):
        _inside(root, root / ".." / "elsewhere")
    store = ResultsStore(tmp_path / "store")
    with pytest.raises(ValueError, match="unsafe run id"):
        store.run_path("../../etc/passwd")
