"""Planning (harness.sweep.plan): stable run ids, duplicates, status against the store, speed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import identity
from harness.config import EncoderConfig, RunConfig, build, to_dict
from harness.data.synthetic import SuiteSpec, make_suite
from harness.identity import (
    BEHAVIOUR_VERSION,
    DEFAULTS_FINGERPRINTS,
    ENCODER_VERSIONS,
    MIGRATIONS,
    SCHEMA_VERSION,
    defaults_fingerprint,
    migrate_config,
    read_config_document,
    record_config,
    run_id,
    run_id_of,
    stamp,
)
from harness.store import ResultsStore
from harness.sweep import _inside, run_sweep
from harness.sweep.plan import check_size, job_alive, plan_study, resolve
from harness.sweep.spec import SpecError, load_spec


def spec_file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_run_id_hashes_config_and_identity_and_ignores_key_order_and_defaults(tmp_path: Path) -> None:
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
  train: {lr: 2e-3, steps: 50, batch_size: 8}
study: b
""", "b.yaml")
    pa, pb = plan_study(load_spec(a)), plan_study(load_spec(b))
    assert [r.run_id for r in pa.runs] == [r.run_id for r in pb.runs]
    for r in pa.runs:
        cfg = build(RunConfig, r.config)
        assert r.run_id == run_id(r.config, r.identity) == run_id_of(cfg, r.identity["dataset"])
        assert r.config == to_dict(cfg) and resolve(r.config) == r.config
        assert cfg.seed == r.seed
        assert r.identity == {"config_schema": SCHEMA_VERSION, "behaviour": BEHAVIOUR_VERSION,
                              "encoder": f"tiny/v{ENCODER_VERSIONS['tiny']}",
                              "dataset": "pending:results/data/mia_synthetic"}
    assert len({r.run_id for r in pa.runs}) == 4
    # a different value gives a different id
    pc = plan_study(load_spec(a, ["train.steps=51"]))
    assert not {r.run_id for r in pc.runs} & {r.run_id for r in pa.runs}


@pytest.mark.parametrize("overrides,rid", [
    ({}, "6cfdc91d6539"),
    ({"model": {"compressor": {"block": "uni_ssm", "pooling": "gpa"}}, "seed": 2}, "3cdbb3e8aa3c"),
    ({"model": {"compressor": {"block": "transformer", "pos_embed": "none"}}}, "df802efd9383"),
])
def test_pinned_run_ids(overrides, rid) -> None:
    # Every field is hashed (no field is left out to keep old ids), with the identity. These change when
    # a version in harness/identity.py is bumped or a default changes: then every stored result is stale
    # (by design) and the new ids go here.
    assert run_id_of(build(RunConfig, overrides), "synthetic:0123456789abcdef") == rid


# schema version -> fingerprint of the resolved default RunConfig. Never edit an old entry.
PINNED_DEFAULTS = {2: "b135d5893388"}


def test_a_changed_default_needs_a_schema_bump_and_a_migration() -> None:
    fp = defaults_fingerprint()
    assert fp == DEFAULTS_FINGERPRINTS.get(SCHEMA_VERSION), (
        f"the resolved default RunConfig changed (fingerprint {fp}): a field was added or removed or a "
        "default changed. Bump harness.identity.SCHEMA_VERSION, add a migration to MIGRATIONS that makes "
        "the old default explicit for older configs, and record the new fingerprint in DEFAULTS_FINGERPRINTS "
        "and in PINNED_DEFAULTS here (see harness/identity.py)")
    assert {k: v for k, v in DEFAULTS_FINGERPRINTS.items() if k in PINNED_DEFAULTS} == PINNED_DEFAULTS
    assert set(MIGRATIONS) == set(range(1, SCHEMA_VERSION)), "one migration per schema step"


# the tiny encoder's output on a fixed input, per ENCODER_VERSIONS["tiny"]: (sum, sum |x|, sum x^2)
PINNED_TINY = {2: (1339.3019, 3343.8975, 2022.0499)}


def test_a_changed_encoder_needs_an_encoder_version_bump() -> None:
    import numpy as np
    import torch

    from harness.data.encoders import build_encoder

    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    frames[:, 16:32, 16:32] = torch.tensor([220, 30, 30], dtype=torch.uint8)
    out = build_encoder(build(EncoderConfig, {"device": "cpu"})).encode(frames).double()
    got = (out.sum().item(), out.abs().sum().item(), (out ** 2).sum().item())
    want = PINNED_TINY.get(ENCODER_VERSIONS["tiny"])
    assert want is not None and got == pytest.approx(want, rel=1e-5), (
        f"the tiny encoder computes other features ({got}): bump ENCODER_VERSIONS['tiny'] in "
        "harness/identity.py (every run on it becomes stale) and pin the new numbers in PINNED_TINY")


def test_migration_makes_old_defaults_explicit() -> None:
    cur = to_dict(build(RunConfig, {}))
    assert migrate_config(cur, SCHEMA_VERSION) == cur and read_config_document(stamp(cur)) == cur
    # a schema-1 record of before commit e8ecd5e: no init_std, no pos_embed / pos_norm / visual_pos
    old = to_dict(build(RunConfig, {}))
    del old["model"]["llm"]["init_std"], old["model"]["compressor"]["pos_embed"]
    del old["model"]["compressor"]["pos_norm"], old["model"]["visual_pos"], old["model"]["encoder"]["config"]
    cfg = build(RunConfig, record_config({"config": old}))
    assert cfg.model.llm.init_std == 0.02 and cfg.model.encoder.config == {"features": "pixels"}
    assert (cfg.model.compressor.pos_embed, cfg.model.compressor.pos_norm, cfg.model.visual_pos) == (
        "none", False, "none")
    # unstamped config.json of after e8ecd5e: the object features
    doc = {"model": {"llm": {"init_std": 0.1}, "encoder": {"name": "tiny"}}}
    assert read_config_document(doc)["model"]["encoder"]["config"] == {
        "features": "objects"}
    with pytest.raises(ValueError, match="newer than this code"):
        migrate_config(cur, SCHEMA_VERSION + 1)


def test_start_frac_resolves_into_start_step() -> None:
    st = [{"start_step": 0, "families": ["colour"]}]
    by_frac = build(RunConfig, {"train": {"steps": 200, "stages": [*st, {"start_frac": 0.5}]}})
    assert by_frac.train.stages[1].start_step == 100


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


def _record(store: ResultsStore, rid: str, status: str, **kw: object) -> None:
    store.write_run({"run_id": rid, "status": status, "seed": 0, "config": {}, **kw})


def test_status_and_actions_from_the_store(tmp_path: Path) -> None:
    p = spec_file(tmp_path, "study: s\ngrid: {model.compressor.block: [conv, identity, transformer]}\nseeds: [0, 1]\n")
    spec = load_spec(p)
    store = ResultsStore(tmp_path / "store")
    planned = plan_study(spec).runs
    ids = [r.run_id for r in planned]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _record(store, ids[0], "done", wall_time_s=120.0, identity=planned[0].identity)
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


# ------------------------------------------------------------------------------------------ staleness
@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) synthetic suite: one family, 4 train + 4 test videos."""
    out = tmp_path_factory.mktemp("suite") / "mia"
    make_suite(out, SuiteSpec(n_train=4, n_val=0, n_test=4, families=["colour"], frames_long=16,
                              frames_dense=16), workers=1, progress=False)
    return out


FAKE_BODY = '''
def body(cfg, run_dir):
    """A job body that trains nothing: a fixed score per seed (the sweep machinery is what is tested)."""
    return {"metrics": [{"task": "mia_long", "metric": "acc", "value": 0.5 + 0.1 * cfg.seed, "n": 4}]}
'''


def _stale_study(tmp_path: Path, suite: Path, extra: str = "") -> Path:
    return spec_file(tmp_path, f"""
study: st
base: {{data: {{suite: {suite}}}}}
grid: {{model.compressor.block: [conv, identity]}}
seeds: [0, 1]
{extra}
""")


def test_a_behaviour_change_shows_old_results_as_stale_and_never_reuses_them(tmp_path, suite, monkeypatch):
    (tmp_path / "fakebody.py").write_text(FAKE_BODY)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec, lines = _stale_study(tmp_path, suite), []
    kw = dict(results=tmp_path / "res", executor="debug", progress=False, log=lines.append, body="fakebody:body")
    first = run_sweep(spec, **kw)
    assert first.exit_code == 0 and first.counts == {"done": 4}, "\n".join(lines)
    old = {r.run_id for r in first.plan.runs}
    store = ResultsStore(tmp_path / "res" / "store")
    assert store.read_run(first.plan.runs[0].run_id)["identity"] == first.plan.runs[0].identity

    monkeypatch.setattr(identity, "BEHAVIOUR_VERSION", BEHAVIOUR_VERSION + 1)  # a behaviour-changing commit
    lines.clear()
    dry = run_sweep(spec, dry_run=True, **kw)
    assert [r.action for r in dry.plan.runs] == ["stale"] * 4 and not dry.plan.to_submit
    assert not old & {r.run_id for r in dry.plan.runs}
    text = "\n".join(lines)
    assert "4 stale" in text and "--rerun-stale" in text
    assert f"behaviour {BEHAVIOUR_VERSION} -> {BEHAVIOUR_VERSION + 1}" in text

    kept = run_sweep(spec, **kw)  # without the flag: nothing runs, the report marks the old results
    assert kept.exit_code == 1 and kept.counts == {"stale": 4}
    table = (tmp_path / "res" / "reports" / "st" / "table_main.md").read_text()
    assert "4 of 4 runs are stale" in table and "--rerun-stale" in table
    entries = store.read_study("st")["runs"]
    assert {e["run_id"] for e in entries} == old and all(e["stale"] and e["current_id"] for e in entries)

    lines.clear()
    rerun = run_sweep(spec, rerun_stale=True, **kw)
    assert "4 rerun" in "\n".join(lines) and not old & {r.run_id for r in rerun.plan.runs}
    assert rerun.exit_code == 0 and rerun.counts == {"done": 4}
    assert "stale" not in (tmp_path / "res" / "reports" / "st" / "table_main.md").read_text()
    assert [r.action for r in plan_study(load_spec(spec), store).runs] == ["skip"] * 4


def test_new_data_or_encoder_or_a_legacy_record_is_stale(tmp_path, suite, monkeypatch):
    from harness.report.data import load_study
    from harness.sweep import write_index

    data = tmp_path / "suite"
    shutil.copytree(suite, data)
    spec = load_spec(_stale_study(tmp_path, data))
    store = ResultsStore(tmp_path / "store")
    plan = plan_study(spec, store)
    assert plan.runs[0].identity["dataset"].startswith("synthetic:") and not plan.pending_suites
    for r in plan.runs:
        _record(store, r.run_id, "done", config=r.config, identity=r.identity)
    write_index(store, plan)
    assert [r.action for r in plan_study(spec, store).runs] == ["skip"] * 4

    with open(data / "test.jsonl", "a") as fh:  # the suite's items change under the same path
        fh.write("\n")
    again = plan_study(spec, store)
    assert [r.status for r in again.runs] == ["stale"] * 4 and "dataset synthetic:" in again.runs[0].reason
    (data / "test.jsonl").write_text((suite / "test.jsonl").read_text())
    monkeypatch.setitem(identity.ENCODER_VERSIONS, "tiny", ENCODER_VERSIONS["tiny"] + 1)
    assert "encoder tiny/v" in plan_study(spec, store).runs[0].reason
    monkeypatch.undo()

    # a record of before versioned identity (every committed store): stale, in the plan and the report
    rec = store.read_run(plan.runs[0].run_id)
    del rec["identity"]
    store.write_run(rec)
    legacy = plan_study(spec, store)
    assert legacy.runs[0].status == "stale" and "before versioned run identity" in legacy.runs[0].reason
    assert [r.action for r in legacy.runs[1:]] == ["skip"] * 3
    study = load_study(store, "st")
    assert [r.run_id for r in study.stale_runs()] == [plan.runs[0].run_id]


def test_a_missing_suite_gives_provisional_ids(tmp_path) -> None:
    spec = load_spec(_stale_study(tmp_path, tmp_path / "not_yet"))
    plan = plan_study(spec)
    assert plan.pending_suites == [str(tmp_path / "not_yet")]
    assert "does not exist yet" in plan.describe() and "provisional" in plan.describe()


def test_a_huge_grid_needs_yes_and_is_refused_before_expanding(tmp_path) -> None:
    axis = ", ".join(str(i) for i in range(1, 1001))
    spec = load_spec(spec_file(tmp_path, f"study: h\ngrid:\n  train.steps: [{axis}]\n  train.batch_size: [{axis}]\n"
                                         "seeds: [0, 1, 2]\n"))
    t0 = time.perf_counter()
    big = r"1,000,000 variant\(s\) x 3 seed\(s\) = 3,000,000 runs, more than --max-runs 10,000: pass --yes"
    with pytest.raises(SpecError, match=big):
        plan_study(spec)
    assert time.perf_counter() - t0 < 1.0  # the product is computed, not the grid
    assert check_size(spec, max_runs=0) == 3_000_000 == check_size(spec, yes=True)
    with pytest.raises(SpecError, match="= 4 runs, more than --max-runs 3"):
        plan_study(load_spec(_stale_study(tmp_path, tmp_path)), max_runs=3)


def test_a_failed_report_makes_the_sweep_exit_non_zero(tmp_path, suite, monkeypatch) -> None:
    (tmp_path / "fakebody.py").write_text(FAKE_BODY)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _stale_study(tmp_path, suite, "report: {metric: accuracy}")  # the runs report `acc`
    out = run_sweep(spec, results=tmp_path / "res", executor="debug", progress=False, log=lambda s: None,
                    body="fakebody:body")
    assert out.counts == {"done": 4} and "report.metric = 'accuracy'" in (out.report_error or "")
    assert out.exit_code == 1


def test_a_stale_record_under_the_same_id_is_rerun_without_its_checkpoint(tmp_path, suite, monkeypatch) -> None:
    (tmp_path / "fakebody.py").write_text(FAKE_BODY)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _stale_study(tmp_path, suite)
    kw = dict(results=tmp_path / "res", executor="debug", progress=False, log=lambda s: None,
              body="fakebody:body", report=False)
    rid = run_sweep(spec, **kw).plan.runs[0].run_id
    store = ResultsStore(tmp_path / "res" / "store")
    rec = store.read_run(rid)
    del rec["identity"]  # e.g. written by a driver that predates identities
    store.write_run(rec)
    (tmp_path / "res" / "runs" / rid / "checkpoint.pt").write_text("old weights")
    assert run_sweep(spec, **kw).counts == {"done": 3, "stale": 1}
    out = run_sweep(spec, rerun_stale=True, **kw)
    assert out.exit_code == 0 and store.read_run(rid)["identity"] == out.plan.runs[0].identity
    aside = list((tmp_path / "res" / "runs").glob(f"{rid}.stale-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoint.pt").read_text() == "old weights"
    assert not (tmp_path / "res" / "runs" / rid / "checkpoint.pt").exists()
