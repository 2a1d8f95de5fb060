"""Shared pytest fixtures.

Keep this file small: only fixtures that several test files need belong here, each with a comment
saying what it provides and when it skips. Add new fixtures in their own section.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.data.synthetic import GROUPS, SuiteSpec, make_suite

# ------------------------------------------------------------------------------------------- Slurm
# `slurm_cluster` gives the Slurm integration tests (tests/test_slurm_integration.py, marked
# `@pytest.mark.slurm`) a reachable cluster, or skips them with the reason. CI starts the local cluster
# first (slurm/local/ci-wrap.sh) and sets CI=true: there an unreachable cluster FAILS the tests instead
# of skipping them, so a broken cluster start cannot pass unnoticed.
#
# The cluster is found through SLURM_CONF if set, else through the state dir of slurm/local/start.sh
# (MAMBAMIA_SLURM_DIR, default /tmp/mambamia-slurm) if it holds a slurm.conf, else Slurm's default
# (/etc/slurm/slurm.conf: a real cluster's login node). The chosen SLURM_CONF is exported for the whole
# session, so `sbatch`/`squeue`/`sacct` run by the sweep (and its jobs) reach the same cluster.

REPO = Path(__file__).resolve().parents[1]
LOCAL_SLURM_DIR = Path(os.environ.get("MAMBAMIA_SLURM_DIR", "/tmp/mambamia-slurm"))


@dataclass(frozen=True)
class SlurmCluster:
    """A reachable Slurm cluster: ``partition`` to submit to (the default one), ``conf`` its slurm.conf
    (None: Slurm's default), ``accounting``: whether ``sacct`` answers (slurmdbd running)."""

    partition: str
    conf: str | None
    accounting: bool
    nodes: str


def _slurm_unavailable(reason: str) -> None:
    """Skip with ``reason`` or, under CI=true, fail with it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but no usable Slurm cluster: {reason}. CI must run the Slurm tests: "
                    "start the cluster with slurm/local/ci-wrap.sh (see docs/slurm.md).", pytrace=False)
    pytest.skip(f"no Slurm cluster: {reason} (start one with `sudo slurm/local/start.sh`, docs/slurm.md)")


def _run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _pid_alive(pidfile: Path) -> bool:
    """Whether ``pidfile`` names a live process (as slurm/local/common.sh's pid_alive, without the name)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").is_dir()


@pytest.fixture(scope="session")
def slurm_client() -> str:
    """The path of `srun`, for tests that need Slurm's client tools but no running cluster (submitit's
    SlurmExecutor refuses to be built without `srun`). Skips without them, fails under CI=true."""
    srun = shutil.which("srun")
    if srun is None:
        _slurm_unavailable("`srun` is not on PATH (Slurm's client tools: slurm/local/install.sh)")
    return srun


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A reachable Slurm cluster with an idle or partly busy node in its default partition (see above)."""
    if shutil.which("sinfo") is None:
        _slurm_unavailable("`sinfo` is not on PATH (install with slurm/local/install.sh)")
    conf = os.environ.get("SLURM_CONF")
    if not conf and (LOCAL_SLURM_DIR / "etc" / "slurm.conf").is_file():
        conf = str(LOCAL_SLURM_DIR / "etc" / "slurm.conf")
    if conf:
        if not Path(conf).is_file():
            _slurm_unavailable(f"SLURM_CONF={conf} does not exist")
        os.environ["SLURM_CONF"] = conf  # for the rest of the session: the sweep and its jobs inherit it
        # the local cluster's config without its slurmctld: say so now rather than after sinfo's retries
        pidfile = Path(conf).parent.parent / "run" / "slurmctld.pid"
        if (Path(conf).parent.parent / "run").is_dir() and not _pid_alive(pidfile):
            _slurm_unavailable(f"the local cluster of {conf} is not running (slurm/local/status.sh)")
    try:
        # %P partition (default marked '*'), %a availability, %T node state, %N nodes
        res = _run(["sinfo", "-h", "-o", "%P %a %T %N"])
    except subprocess.TimeoutExpired:
        _slurm_unavailable(f"`sinfo` timed out (SLURM_CONF={conf or 'default'}): slurmctld not answering")
    if res.returncode != 0:
        _slurm_unavailable(f"`sinfo` failed (SLURM_CONF={conf or 'default'}): {res.stderr.strip()[:300]}")
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.strip()]
    default = [r for r in rows if r[0].endswith("*")] or rows
    usable = [r for r in default if len(r) >= 4 and r[1] == "up"
              and r[2].rstrip("*~#!%$@^-") in ("idle", "mixed", "allocated", "completing")
              and not r[2].endswith("*")]
    if not usable:
        _slurm_unavailable(f"no usable node in the default partition: `sinfo` says {res.stdout.strip()!r}")
    acct = _run(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"]).returncode == 0
    part = usable[0][0].rstrip("*")
    return SlurmCluster(partition=part, conf=conf, accounting=acct, nodes=usable[0][3])


# ---------------------------------------------------------------------------- the compress suite
# `compress_suite`: a small synthetic suite of the compress families (32 train / 16 test items, 16 dense
# frames), made once per session for the probe-protocol tests of the sweep's fault handling
# (tests/test_faults.py) and of the trackers (tests/test_trackers.py). Never skips.
@pytest.fixture(scope="session")
def compress_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compress") / "mia"
    make_suite(out, SuiteSpec(families=GROUPS["compress"], n_train=32, n_val=0, n_test=16, frames_dense=16),
               workers=1, progress=False)
    return out
