"""The results store (harness.store): atomic records, concurrent writers, records() rows, safe names."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from harness.store import ResultsStore, atomic_write_json, safe_name


def _writer(args: tuple[str, int]) -> int:
    root, k = args
    store = ResultsStore(root)
    for i in range(40):
        # every process rewrites the shared run and its own run, with a large payload
        store.write_run({"run_id": "shared", "status": "running", "seed": k, "extra": {"blob": "x" * 20000, "i": i}})
        store.write_run({"run_id": f"own{k}", "status": "done", "seed": k, "metrics": [
            {"task": "mia_long", "metric": "acc", "value": i / 40, "n": 8}]})
    return k


def test_concurrent_writers_never_corrupt(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        assert sorted(pool.map(_writer, [(str(tmp_path), k) for k in range(4)])) == [0, 1, 2, 3]
    store = ResultsStore(tmp_path)
    assert store.run_ids() == ["own0", "own1", "own2", "own3", "shared"]
    for rid in store.run_ids():
        rec = json.loads((tmp_path / "runs" / f"{rid}.json").read_text())  # each file is whole JSON
        assert rec["schema"] == 1 and rec["run_id"] == rid
    assert store.read_run("shared")["extra"]["i"] == 39
    assert not [p for p in (tmp_path / "runs").iterdir() if p.suffix != ".json"]  # no temp files left


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})

    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_json(p, {"v": Bad()})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_records_one_row_per_run_task_metric(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_run({"run_id": "r1", "status": "done", "seed": 0, "wall_time_s": 12.5,
                     "tokens": {"llm_visual": 64, "visual_in": 1024}, "extra": {"eval_time_s": 1.5, "d": {"x": 1}},
                     "metrics": [{"task": "mia_long", "metric": "acc", "value": 0.5, "n": 8},
                                 {"task": "mia_dense", "metric": "acc", "value": 0.25, "n": 8}]})
    store.write_run({"run_id": "r2", "status": "failed", "seed": 1, "reason": "TrainingDiverged: nan",
                     "log_path": "/logs/r2.err"})
    store.write_study("st", [{"run_id": "r1", "seed": 0, "variant": {"block": "conv"}, "label": "block=conv"},
                             {"run_id": "r2", "seed": 1, "variant": {"block": "conv"}, "label": "block=conv"},
                             {"run_id": "r3", "seed": 2, "variant": {"block": "conv"}, "label": "block=conv"}],
                      {"axes": {"block": "model.compressor.block"}})
    df = store.records("st")
    assert len(df) == 4
    done = df[df.status == "done"]
    assert sorted(zip(done.task, done.value)) == [("mia_dense", 0.25), ("mia_long", 0.5)]
    assert set(done["v.block"]) == {"conv"} and set(done.llm_visual_tokens) == {64}
    assert set(done["x.eval_time_s"]) == {1.5} and "x.d" not in df.columns
    failed = df[df.status == "failed"].iloc[0]
    assert failed.reason == "TrainingDiverged: nan" and failed.log_path == "/logs/r2.err" and failed.n == 0
    assert df[df.run_id == "r3"].iloc[0].status == "missing"
    assert store.studies() == ["st"] and store.read_study("st")["axes"] == {"block": "model.compressor.block"}


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200, "a\\b", "..", "a b"])
def test_unsafe_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        safe_name(bad)
    with pytest.raises(ValueError, match="unsafe"):
        ResultsStore(tmp_path).write_run({"run_id": bad, "status": "done"})
    assert not list(tmp_path.rglob("*.json"))


def test_missing_study_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such study"):
        ResultsStore(tmp_path).read_study("nope")
