"""Which runs the plain rerun takes up again: the attempt policy for runs killed from outside.

A run whose job died from outside (SIGKILL, the OOM killer, a node failure, a Slurm cancel, preemption or
time limit without requeue) did not fail by its own error: the driver records it ``failed`` with
``"killed": true, "resumable": true``, and the plain rerun of the sweep runs it again, from its
checkpoint when it has one, from the start when it has none. Each such death is counted in the run's
``attempts.jsonl`` (the execution's line gets ``"killed": <reason>``) and mirrored in the record
(``"kills"``), so a run the OOM killer takes every time does not loop: once it has been killed
``max_attempts`` times (default :data:`DEFAULT_MAX_ATTEMPTS`, ``--max-attempts``), the plain rerun leaves it
``failed``, with a reason that says how often it was tried. ``--retry-failed`` runs it (and the runs that
failed by their own error) again.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from harness.store import atomic_write_text

ATTEMPTS_FILE = "attempts.jsonl"
DEFAULT_MAX_ATTEMPTS = 3


def read_attempts(run_dir: Path) -> list[dict[str, Any]]:
    """The executions ``attempts.jsonl`` lists (a torn last line, cut by a kill, is skipped)."""
    try:
        text = (Path(run_dir) / ATTEMPTS_FILE).read_text()
    except OSError:
        return []
    out = []
    for ln in text.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(ln)
            if isinstance(rec, dict):
                out.append(rec)
    return out


def count_kills(attempts: list[dict[str, Any]]) -> int:
    return sum(1 for a in attempts if a.get("killed"))


def cause_of(reason: str) -> str:
    """The head of a kill's reason, what killed it: ``killed by SIGKILL (the OOM killer: ...)``, ``job 7
    OUT_OF_MEMORY`` (the text before the first ``": "`` outside parentheses)."""
    depth = 0
    for i, ch in enumerate(reason):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and reason.startswith(": ", i):
            return reason[:i]
    return reason.split(" | ")[0][:300]


def mark_killed(run_dir: Path, attempt: int, reason: str) -> int:
    """Mark execution ``attempt`` of ``run_dir`` as killed from outside (``"killed": reason`` on its line
    of ``attempts.jsonl``, added when the job died before writing one) and return how many of the run's
    executions were killed. Only the run's owner calls this, once its job has ended (rewritten atomically)."""
    attempts = read_attempts(run_dir)
    line = next((a for a in reversed(attempts) if a.get("attempt") == attempt), None)
    if line is None:  # killed before its first line (while starting): count the execution anyway
        line = {"attempt": attempt, "started": None}
        attempts.append(line)
    if not line.get("killed"):
        line["killed"] = cause_of(reason)
    atomic_write_text(Path(run_dir) / ATTEMPTS_FILE, "".join(json.dumps(a) + "\n" for a in attempts))
    return count_kills(attempts)


def kill_action(record: dict[str, Any], max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> tuple[str, str | None]:
    """What the plain rerun does with a ``failed`` record marked ``resumable``: ``("resume", None)``, or
    ``("failed", reason)`` once it was killed ``max_attempts`` times (0: no limit)."""
    kills = int(record.get("kills") or 0)
    if not record.get("killed") or not max_attempts or kills < max_attempts:
        return "resume", None
    last = cause_of(str(record.get("reason") or ""))
    n_exec = int((record.get("job") or {}).get("attempt") or kills)
    return "failed", (f"killed {kills} times in {n_exec} attempt(s), the --max-attempts limit of {max_attempts}; "
                      f"last: {last}. --retry-failed runs it again (or raise --max-attempts)")
