"""``python -m harness doctor`` and the sweep's pre-flight: real checks, real failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import doctor

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_doctor_passes_in_the_test_environment() -> None:
    r = _run(["-m", "harness", "doctor"])
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("lmms-eval", "PyAV", "CPU scan", "mamba-ssm", "disk"):
        assert f"[ok  ] {name}:" in r.stdout, r.stdout
    assert "H.264 and VP9" in r.stdout and "matches the reference" in r.stdout
    assert "5 of 5 checks passed" in r.stdout


def test_doctor_names_a_filelock_without_its_private_module(tmp_path: Path) -> None:
    """The failure issue 16 saw: a filelock release without ``filelock._api`` kills lmms-eval's CLI at
    import. A package of that shape first on the path must be reported with the fix, not a traceback."""
    fake = tmp_path / "filelock"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "__version__ = '9.9.9'\nclass Timeout(Exception):\n    pass\nclass BaseFileLock:\n    pass\n"
        "class FileLock(BaseFileLock):\n    def __init__(self, *a, **k):\n        pass\nSoftFileLock = FileLock\n")
    code = "from harness.doctor import check_lmms_eval; print(check_lmms_eval().line())"
    r = _run(["-c", code], env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[FAIL] lmms-eval: the CLI cannot start"), r.stdout
    assert "requirements-lock.txt" in r.stdout


def test_disk_check_fails_below_the_need(tmp_path: Path) -> None:
    ok = doctor.check_disk(tmp_path / "not" / "yet", need_gb=0.001)
    assert ok.ok and str(tmp_path) in ok.detail
    bad = doctor.check_disk(tmp_path, need_gb=1e9)
    assert not bad.ok and "GiB wanted" in bad.line() and "->" in bad.line()


def test_sweep_stops_before_writing_when_slurm_is_missing(tmp_path: Path) -> None:
    """--executor slurm without Slurm's tools: exit 2 with the doctor's line, nothing written."""
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not (Path(d) / "sbatch").exists())
    res = tmp_path / "res"
    r = _run(["-m", "harness.sweep", str(ROOT / "ablations" / "block_type.yaml"), "--executor", "slurm",
              "--results", str(res), "--no-progress"], env={"PATH": path})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "[FAIL] Slurm: client tools not on PATH" in r.stderr and "python -m harness doctor" in r.stderr
    assert not (res / "store").exists()
