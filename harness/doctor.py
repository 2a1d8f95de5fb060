"""Environment checks: ``python -m harness doctor`` and the sweep's pre-flight.

Each check answers one question a run depends on and, when the answer is no, says in one line what is
missing and how to get it. The sweep runs the checks its study needs (:func:`preflight`) before it writes
or submits anything, so a broken environment stops the sweep with that line instead of a traceback in
every job.

Checks: the lmms-eval CLI's import chain, model registry and task manager (the CLI dies at import when
filelock is too new, for instance); PyAV round-trips H.264 and VP9; mamba-ssm and its CUDA kernels where a
GPU is visible; Slurm's client tools and controller where a Slurm profile is chosen; free disk under the
results root.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import io
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.model.ssm import cpu_scan_fn, selective_scan, selective_scan_ref

REPO = Path(__file__).resolve().parents[1]
INSTALL_HINT = "pip install -r requirements-lock.txt && pip install --no-deps -e . (docs/install.md)"
MIN_FREE_GB = 2.0


@dataclass
class Check:
    """One answer: ``ok`` or not, what was seen (``detail``) and, when not ok, ``fix``."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.name}: {self.detail}" + ("" if self.ok or not self.fix else f" -> {self.fix}")


class EnvironmentProblem(RuntimeError):
    """Raised by :func:`preflight` with one line per failed check."""


def check_lmms_eval(task: str = "mia_colour", include_path: Path = REPO / "tasks") -> Check:
    """The imports ``lmms-eval`` does before it scores anything, the ``mambamia`` model through the entry
    point registry, and ``task`` through the task manager with the project's task folder."""
    name = "lmms-eval"
    try:
        version = importlib.metadata.version("lmms_eval")
    except importlib.metadata.PackageNotFoundError:
        return Check(name, False, "not installed", INSTALL_HINT)
    try:
        importlib.import_module("lmms_eval.evaluator")  # the CLI imports it before evaluating
        importlib.import_module("lmms_eval.__main__")
    except Exception as e:  # noqa: BLE001 - any failure here means the CLI dies the same way
        fl = _version("filelock")
        why = f"the CLI cannot start: {type(e).__name__}: {e}"
        if "filelock" in str(e):
            why += f" (filelock {fl}; lmms-eval {version} needs filelock<4.3)"
        return Check(name, False, why, INSTALL_HINT)
    try:
        from lmms_eval.models import get_model
        get_model("mambamia")
    except Exception as e:  # noqa: BLE001
        return Check(name, False, f"model 'mambamia' not registered ({type(e).__name__}: {e})",
                     "pip install --no-deps -e . (registers the lmms_eval.models entry point)")
    try:
        from lmms_eval.tasks import TaskManager
        known = TaskManager(include_path=str(include_path)).all_tasks
    except Exception as e:  # noqa: BLE001
        return Check(name, False, f"task manager failed: {type(e).__name__}: {e}", INSTALL_HINT)
    if task not in known:
        return Check(name, False, f"task {task!r} not found under {include_path}",
                     "run from the repository root, or pass --include_path tasks")
    return Check(name, True, f"{version}: CLI imports, model 'mambamia' registered, {len(known)} tasks")


def _roundtrip(codec: str, container: str) -> str:
    """Encode 6 frames with ``codec`` into memory, decode them back; returns '' or the problem."""
    import av  # lazy: the doctor reports a missing PyAV (check_pyav) instead of failing to import

    frames = (np.random.default_rng(0).random((6, 64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        s = out.add_stream(codec, rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    buf.seek(0)
    with av.open(buf) as inp:
        n = sum(1 for _ in inp.decode(video=0))
    return "" if n == len(frames) else f"decoded {n} of {len(frames)} frames"


def check_pyav() -> Check:
    name = "PyAV"
    try:
        import av  # lazy: the doctor reports a missing PyAV instead of failing to import
    except ImportError:
        return Check(name, False, "not installed", INSTALL_HINT)
    bad = []
    for label, codec, fmt in (("H.264", "libx264", "mp4"), ("VP9", "libvpx-vp9", "webm")):
        try:
            problem = _roundtrip(codec, fmt)
        except Exception as e:  # noqa: BLE001
            problem = f"{type(e).__name__}: {e}"
        if problem:
            bad.append(f"{label}: {problem}")
    if bad:
        return Check(name, False, "; ".join(bad), "install a PyAV wheel with FFmpeg's codecs (pip install av)")
    return Check(name, True, f"{av.__version__}: encodes and decodes H.264 and VP9")


def check_cpu_scan() -> Check:
    """The compiled CPU selective scan (numba) compiles, runs and matches the sequential reference."""
    name = "CPU scan"
    fn = cpu_scan_fn()
    if fn is None:
        return Check(name, False, "numba missing: the pure-PyTorch scan runs, ~3-7x slower on a CPU", INSTALL_HINT)
    g = torch.Generator().manual_seed(0)
    u, dt = torch.randn(2, 8, 70, generator=g), torch.randn(2, 8, 70, generator=g)
    A = -torch.rand(8, 4, generator=g) - 0.5
    B, C = torch.randn(2, 4, 70, generator=g), torch.randn(2, 4, 70, generator=g)
    try:
        y = selective_scan(u, dt, A, B, C, delta_softplus=True, backend="cpu")
    except Exception as e:  # noqa: BLE001 - a compile failure is this check's finding
        return Check(name, False, f"numba {_version('numba')} failed: {type(e).__name__}: {e}"[:300], INSTALL_HINT)
    ref = selective_scan_ref(u.double(), dt.double(), A.double(), B.double(), C.double(), delta_softplus=True)
    err = float((y.double() - ref).norm() / ref.norm())
    if err > 1e-5:
        return Check(name, False, f"numba {_version('numba')}: relative error {err:.1e} against the reference")
    return Check(name, True, f"numba {_version('numba')}: compiled, matches the reference ({err:.0e})")


def check_mamba() -> Check:
    """mamba-ssm's CUDA kernels where a GPU is visible; without a GPU the CPU scans are used."""
    name = "mamba-ssm"
    if not torch.cuda.is_available():
        return Check(name, True, "no GPU visible: the CPU scans run (same math)")
    missing = []
    for mod in ("mamba_ssm", "selective_scan_cuda", "causal_conv1d"):
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001
            missing.append(f"{mod} ({type(e).__name__})")
    if missing:
        return Check(name, False, f"GPU {torch.cuda.get_device_name(0)} but missing: {', '.join(missing)}",
                     'pip install -e ".[cuda]" --no-build-isolation, or benchmarks/gpu_build_mamba.sh '
                     "(docs/gpu.md)")
    return Check(name, True, f"{_version('mamba_ssm')} with CUDA kernels on {torch.cuda.get_device_name(0)}")


def check_slurm() -> Check:
    name = "Slurm"
    missing = [t for t in ("sbatch", "squeue", "scancel", "sinfo", "srun") if shutil.which(t) is None]
    if missing:
        return Check(name, False, f"client tools not on PATH: {', '.join(missing)}",
                     "run on a login node, or start the local cluster (slurm/local/install.sh && "
                     "slurm/local/start.sh; docs/slurm.md)")
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return Check(name, False, "`sinfo` timed out: slurmctld does not answer", "check SLURM_CONF / the cluster")
    if r.returncode != 0:
        return Check(name, False, f"`sinfo` failed: {r.stderr.strip()[:200]}", "check SLURM_CONF / the cluster")
    parts = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    return Check(name, True, f"controller answers; partitions: {' '.join(parts) or '(none)'}")


def check_disk(path: Path, need_gb: float = MIN_FREE_GB) -> Check:
    path = Path(path)
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free / 2**30
    if free < need_gb:
        return Check("disk", False, f"{free:.1f} GiB free under {probe}, {need_gb:.1f} GiB wanted",
                     "free space or pass --results on a larger disk")
    return Check("disk", True, f"{free:.1f} GiB free under {probe}")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_checks(*, lmms_eval: bool = True, slurm: bool = False, disk: bool = True,
               results: Path = Path("results"), need_gb: float = MIN_FREE_GB) -> list[Check]:
    """The checks a run with these needs depends on, in a fixed order."""
    checks: list[Callable[[], Check]] = [check_pyav, check_cpu_scan, check_mamba]
    if disk:
        checks.append(lambda: check_disk(results, need_gb))
    if lmms_eval:
        checks.insert(0, check_lmms_eval)
    if slurm:
        checks.append(check_slurm)
    return [c() for c in checks]


def preflight(*, lmms_eval: bool, slurm: bool, results: Path, log: Callable[[str], None] = print) -> None:
    """The sweep's pre-flight: raise :class:`EnvironmentProblem` naming every failed check. Free disk is
    left to the sweep, which compares it with the study's own estimate and warns (a fixed floor would
    refuse a small study on a small disk)."""
    failed = [c for c in run_checks(lmms_eval=lmms_eval, slurm=slurm, disk=False, results=results) if not c.ok]
    if failed:
        raise EnvironmentProblem("the environment cannot run this study (python -m harness doctor):\n  "
                                 + "\n  ".join(c.line() for c in failed))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness doctor",
        description="Check that this environment can run the harness; one line per check, with the fix "
                    "for each that fails. Exit 0 when all pass, 1 otherwise.",
        epilog="examples:\n  python -m harness doctor\n  python -m harness doctor --slurm   "
               "# also Slurm's client tools and controller\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slurm", action="store_true", help="also check Slurm (for --executor slurm)")
    ap.add_argument("--results", type=Path, default=Path("results"), help="results root to check free disk under")
    a = ap.parse_args(argv)
    checks = run_checks(slurm=a.slurm, results=a.results)
    for c in checks:
        print(c.line())
    bad = sum(not c.ok for c in checks)
    print(f"{len(checks) - bad} of {len(checks)} checks passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
