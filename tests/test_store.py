"""The results store (harness.store): atomic records, concurrent writers, records() rows, safe names."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import stat
import subprocess
import time
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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_store_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Records and tables are as readable as any file the user writes (mkstemp alone gives 0600)."""
    old = os.umask(umask)
    try:
        ResultsStore(tmp_path).write_run({"run_id": "r1", "status": "done"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "runs" / "r1.json").stat().st_mode) == mode


def test_clean_temp_files_removes_only_dead_writers_files(tmp_path: Path) -> None:
    from harness.store import _HOST, clean_temp_files

    dead = tmp_path / f".r1.json.{_HOST}.{2**22 + 4321}.ab_c.tmp"
    live = tmp_path / f".r2.json.{_HOST}.{os.getpid()}.ab_c.tmp"
    far_new, far_old = tmp_path / ".r3.json.otherhost.12.ab.tmp", tmp_path / ".r4.json.otherhost.12.ab.tmp"
    for p in (dead, live, far_new, far_old):
        p.write_text("half")
    os.utime(far_old, (time.time() - 7200, time.time() - 7200))
    assert sorted(clean_temp_files(tmp_path)) == sorted([dead, far_old])
    assert live.exists() and far_new.exists()


def test_atomic_write_on_a_full_disk_raises_and_leaves_no_temp_file(tmp_path: Path) -> None:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        atomic_write_json(mnt / "a.json", {"v": 1})
        with pytest.raises(OSError) as ei:
            atomic_write_json(mnt / "a.json", {"v": "x" * 200_000})
        assert ei.value.errno == errno.ENOSPC
        assert json.loads((mnt / "a.json").read_text()) == {"v": 1}
        assert [p.name for p in mnt.iterdir()] == ["a.json"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
