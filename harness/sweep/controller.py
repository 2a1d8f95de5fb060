"""The local executor's job controller: submitit's, tied to the sweep driver and reporting signals.

``python -m harness.sweep.controller FOLDER`` replaces ``python -m submitit.local._local FOLDER`` (the
process submitit's ``LocalExecutor`` starts per job, which starts the job's task processes). Two changes:

* it dies with its parent (``PR_SET_PDEATHSIG`` = SIGKILL, see :func:`die_with_parent`), and each task
  dies with the controller (``run_job`` calls the same), so a SIGKILLed driver leaves no worker behind;
* when a task was killed by a signal it exits with ``128 + signal`` (submitit's controller exits 0 and
  the driver could only say the job "has not produced any output"), so the driver can say SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Any

from submitit.local.local import Controller

PR_SET_PDEATHSIG = 1
DRIVER_PID_ENV = "MAMBAMIA_DRIVER_PID"


def _load_prctl() -> Any:
    # loaded once, in the parent: a forked child must not dlopen (another thread may hold the loader lock)
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends; False where unsupported. If the
    parent is already gone (or is not ``expected_parent``) the signal is sent now."""
    if _PRCTL is None:
        return False
    parent = os.getppid()
    if _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent or (expected_parent is not None and parent != expected_parent):
        os.kill(os.getpid(), sig)  # the parent died before the request took effect
    return True


class TiedController(Controller):  # pragma: no cover - runs in the controller process
    """submitit's Controller, remembering the tasks' exit codes."""

    exit_codes: list[int | None]

    def wait(self, freq: int = 24) -> Any:
        codes = super().wait(freq)
        self.exit_codes = list(codes)
        return codes


def main(folder: str) -> int:  # pragma: no cover - runs in the controller process
    driver = os.environ.get(DRIVER_PID_ENV)
    shell = bool(os.environ.get("SUBMITIT_LOCAL_WITH_SHELL"))
    die_with_parent(signal.SIGKILL, int(driver) if driver and not shell else None)
    c = TiedController(Path(folder))
    c.exit_codes = []
    c.run()
    killed = [-e for e in c.exit_codes if e is not None and e < 0]
    return 128 + killed[0] if killed else 0


def cli() -> None:  # pragma: no cover - the process the local executor starts
    """``python -c "from harness.sweep.controller import cli; cli()" FOLDER``: the executor starts it this
    way, since ``python -m`` on a module that its package's ``__init__`` imports warns (runpy) in every
    job's log."""
    assert len(sys.argv) == 2, "usage: python -m harness.sweep.controller <submitit folder>"
    sys.exit(main(sys.argv[1]))


if __name__ == "__main__":  # pragma: no cover
    cli()
