"""lmms-eval's own task index, for checking suite names before anything runs.

``known_tasks()`` asks lmms-eval's ``TaskManager`` (with the project's ``tasks/`` on its include path)
for every task, group and tag name it knows. Building that index reads ~2000 YAML files (30 s on a busy
2-core box), so the answer is memoised on disk, keyed by the lmms-eval version and the path, size and
mtime of every task YAML it would read: adding, editing or removing a YAML (or upgrading lmms-eval)
rebuilds it. ``check_lmms_task(name)`` says why a name is no lmms-eval task, with a "did you mean"
(``mlvu`` -> ``mlvu_dev``, ``mlvu_test``).

Imports nothing heavy (no torch); lmms-eval itself only when the index must be rebuilt.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from harness.store import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO_ROOT / "tasks"


def _lmms_tasks_root() -> Path:
    spec = find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lmms-eval is not installed: pip install lmms-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mambamia-harness"


def _index_key(include: Path) -> str:
    h = hashlib.sha256(version("lmms-eval").encode())
    for root in (_lmms_tasks_root(), include):
        for p in sorted(root.rglob("*.yaml")) + sorted(root.rglob("*_yaml")):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def known_tasks(include_path: str | os.PathLike = TASKS_DIR) -> dict[str, str]:
    """``{name: "task" | "group" | "tag" | "python_task"}`` of every name lmms-eval resolves with
    ``include_path`` on its include path (memoised on disk, see the module docstring)."""
    include = Path(include_path).resolve()
    key = _index_key(include)
    memo = _cache_dir() / f"lmms_tasks-{key}.json"
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):
        pass
    from lmms_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(include))
    out = {name: str(info.get("type", "task")) for name, info in tm.task_index.items()}
    with contextlib.suppress(OSError):  # an unwritable cache: rebuild next time
        atomic_write_text(memo, json.dumps(out, sort_keys=True))
    return out


def did_you_mean(name: str, known: list[str] | dict[str, str], n: int = 6) -> list[str]:
    """Names close to ``name``: those it is a prefix of (``mlvu`` -> ``mlvu_dev``), then close spellings."""
    names = sorted(known)
    pre = [k for k in names if k.startswith(name + "_") or k.startswith(name)][:n]
    close = [k for k in difflib.get_close_matches(name, names, n=n, cutoff=0.75) if k not in pre]
    return (pre + close)[:n]


def check_lmms_task(name: str, include_path: str | os.PathLike = TASKS_DIR) -> str | None:
    """Why ``name`` is not an lmms-eval task/group/tag name, or None when it is."""
    known = known_tasks(include_path)
    if name in known:
        return None
    sugg = did_you_mean(name, known)
    hint = f"; did you mean {', '.join(sugg)}?" if sugg else ""
    return (f"unknown lmms-eval task {name!r}{hint} (lmms-eval {version('lmms-eval')} with --include_path "
            f"{include_path}; list them with `lmms-eval --tasks list`)")
