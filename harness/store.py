"""The results store: one JSON file per run and one index per study, written atomically.

Layout under ``root`` (default ``results/store``)::

    runs/<run_id>.json        a run record (schema below), replaced atomically as the run progresses
    studies/<study>.json      which runs make up a study, with each run's variant labels and seed

A run record::

    {"schema": 1, "run_id": str, "status": "done" | "failed" | "running",
     "reason": str | None, "log_path": str | None, "seed": int, "config": {resolved RunConfig},
     "git_commit": str, "versions": {pkg: version}, "wall_time_s": float,
     "started": iso, "finished": iso,
     "tokens": {"visual_in": int, "llm_visual": int, ...},          # per-sample token counts
     "metrics": [{"task": str, "metric": str, "value": float, "n": int, "n_failed": int,
                  "stderr": float | None, "group": str | None, "higher_is_better": bool | None}, ...],
     "extra": {...},                                                 # latency, peak memory, ...
     "trackers": {name: link},            # train.report_to: each tracker run (URL or offline folder)
     "killed": bool, "kills": int, "resumable": bool}  # failed: killed from outside, how often; rerun it

``records()`` flattens the store into one row per (run, task, metric), the unit every table is made of.
Each file is written through a temporary file in the same folder and ``os.replace``, so a reader never
sees half a record and concurrent writers of different runs never collide. Files get the mode a plain
``open()`` would give (``0666 & ~umask``: group-readable under the usual umask 022 or 002, so teammates on
a shared cluster can read the store), not ``mkstemp``'s 0600. Temporary files are named
``.<name>.<host>.<pid>.<random>.tmp`` and removed when the write fails; one left by a killed process is
removed by :func:`clean_temp_files` (the sweep driver and the report call it on their folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA = 1
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:24] or "host"
# .<name>.<host>.<pid>.<mkstemp's random part>.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def safe_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a plain file name (no separators, no '..'); raise otherwise."""
    if not isinstance(name, str) or not _SAFE.match(name) or ".." in name:
        raise ValueError(f"unsafe {what} {name!r}: use letters, digits, '_', '-' and '.' only")
    return name


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)  # elsewhere: the classic set-and-restore (briefly process-wide)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never a mix:
    a temporary file in the same folder, fsync'ed, then ``os.replace``'d into place. The file gets
    :func:`file_mode` (umask-respecting); on any error (a full disk: ``OSError`` ENOSPC) the temporary
    file is removed and the old file, if any, stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:32]}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts: this only guards temp files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_temp_files(folder: str | os.PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write_bytes` in ``folder`` (not recursive) that no
    live writer owns: those of a dead process of this host, and any older than ``older_than_s`` (another
    host's writer, which this host cannot ask). Returns the removed paths."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = _TEMP.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime > older_than_s
        except OSError:
            continue
        dead = m["host"] == _HOST and not _pid_exists(int(m["pid"]))
        if dead or old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                removed.append(Path(e.path))
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


class ResultsStore:
    def __init__(self, root: str | os.PathLike = "results/store"):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.studies_dir = self.root / "studies"

    # ------------------------------------------------------------------------------------------ runs
    def run_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{safe_name(run_id, 'run id')}.json"

    def write_run(self, record: dict[str, Any]) -> None:
        rec = {"schema": SCHEMA, "metrics": [], "extra": {}, "tokens": {}, **record}
        atomic_write_json(self.run_path(rec["run_id"]), rec)

    def read_run(self, run_id: str) -> dict[str, Any] | None:
        p = self.run_path(run_id)
        if not p.exists():
            return None
        return json.loads(p.read_text())

    def run_ids(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted(p.stem for p in self.runs_dir.glob("*.json"))

    def status(self, run_id: str) -> str | None:
        rec = self.read_run(run_id)
        return rec.get("status") if rec else None

    # --------------------------------------------------------------------------------------- studies
    def write_study(self, study: str, runs: Iterable[dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
        """``runs``: dicts with ``run_id``, ``seed``, ``variant`` ({axis: value}) and ``label``."""
        atomic_write_json(self.studies_dir / f"{safe_name(study, 'study name')}.json",
                          {"schema": SCHEMA, "study": study, **(meta or {}), "runs": list(runs)})

    def read_study(self, study: str) -> dict[str, Any]:
        p = self.studies_dir / f"{safe_name(study, 'study name')}.json"
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such study in the results store (run its sweep first)")
        return json.loads(p.read_text())

    def studies(self) -> list[str]:
        if not self.studies_dir.exists():
            return []
        return sorted(p.stem for p in self.studies_dir.glob("*.json"))

    # --------------------------------------------------------------------------------------- records
    def records(self, study: str | None = None):
        """One row per (run, task, metric) as a pandas DataFrame.

        Columns: study, run_id, label, seed, status, reason, log_path, task, metric, value, n, n_failed
        (samples scored wrong because their video could not be read), stderr (lmms-eval's), wall_time_s,
        llm_visual_tokens, visual_in_tokens, llm_input_tokens (mean LLM input per sample, lmms-eval
        runs), llm_visual_min / llm_visual_max (the fewest / most LLM visual tokens of one video), plus
        ``v.<axis>`` for every variant axis.
        Runs listed in a study but absent from the store appear with status ``missing``; failed runs
        appear once with an empty task/metric, so tables can say what is missing and why.
        """
        rows: list[dict[str, Any]] = []
        studies = [study] if study else self.studies()
        for s in studies:
            index = self.read_study(s)
            for entry in index["runs"]:
                rec = self.read_run(entry["run_id"]) or {"status": "missing", "metrics": []}
                base = {
                    "study": s, "run_id": entry["run_id"], "label": entry.get("label", entry["run_id"]),
                    "seed": entry.get("seed", rec.get("seed")), "status": rec.get("status"),
                    "reason": rec.get("reason"), "log_path": rec.get("log_path"),
                    "wall_time_s": rec.get("wall_time_s"),
                    "llm_visual_tokens": (rec.get("tokens") or {}).get("llm_visual"),
                    "visual_in_tokens": (rec.get("tokens") or {}).get("visual_in"),
                    "llm_input_tokens": (rec.get("tokens") or {}).get("llm_input_mean"),
                    "llm_visual_min": (rec.get("tokens") or {}).get("llm_visual_min"),
                    "llm_visual_max": (rec.get("tokens") or {}).get("llm_visual_max"),
                    **{f"v.{k}": v for k, v in (entry.get("variant") or {}).items()},
                }
                for k, v in (rec.get("extra") or {}).items():
                    if isinstance(v, (int, float, str, bool)) or v is None:
                        base[f"x.{k}"] = v
                metrics = rec.get("metrics") or []
                if rec.get("status") != "done" or not metrics:
                    rows.append({**base, "task": None, "metric": None, "value": float("nan"), "n": 0})
                for m in metrics if rec.get("status") == "done" else []:
                    rows.append({**base, "task": m["task"], "metric": m["metric"],
                                 "value": float(m["value"]), "n": int(m.get("n", 0)),
                                 "n_failed": int(m.get("n_failed") or 0), "stderr": m.get("stderr")})
        return pd.DataFrame(rows)
