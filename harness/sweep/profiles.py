"""Compute profiles: ``slurm/<name>.yaml`` -> :class:`harness.config.ComputeProfile` (strict).

A profile says where a sweep's jobs run and what each asks for (executor, partition, GPUs, CPUs,
memory, time, array parallelism, QOS, account, extra ``#SBATCH`` options, setup lines). Unknown keys and
wrong types are refused with the file and the key named. ``slurm/local.yaml`` (the default),
``slurm/debug.yaml``, ``slurm/localcluster.yaml`` (the CI Slurm) and ``slurm/paper.yaml`` ship with the repo.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from harness.config import ComputeProfile, ConfigError, build
from harness.store import safe_name
from harness.yamlio import YamlFileError, load_yaml_file

#: Where profiles live: ``$MAMBAMIA_PROFILES`` or ``slurm/`` of the repository (then of the cwd).
REPO_PROFILES = Path(__file__).resolve().parents[2] / "slurm"


def profiles_dir() -> Path:
    env = os.environ.get("MAMBAMIA_PROFILES")
    if env:
        return Path(env)
    return REPO_PROFILES if REPO_PROFILES.is_dir() else Path("slurm")


def available_profiles(directory: str | Path | None = None) -> list[str]:
    d = Path(directory) if directory else profiles_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_profile(name: str, directory: str | Path | None = None) -> ComputeProfile:
    """Read ``<directory>/<name>.yaml`` (or a path to a YAML file) into a ComputeProfile.

    Raises :class:`ConfigError` naming the file and key for unknown profiles, keys, types and values."""
    d = Path(directory) if directory else profiles_dir()
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        path = Path(name)
    else:
        try:
            safe_name(name, "profile name")
        except ValueError as e:
            raise ConfigError("profile", str(e)) from None
        path = d / f"{name}.yaml"
    if not path.is_file():
        known = available_profiles(d)
        hint = difflib.get_close_matches(name, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError("profile", f"no compute profile {name!r}: {path} does not exist{extra}; "
                          f"profiles in {d}: {', '.join(known) or 'none'}")
    try:
        doc = load_yaml_file(path) or {}
    except YamlFileError as e:
        raise ConfigError("", str(e).removeprefix(f"{path}: "), source=str(path)) from None
    if not isinstance(doc, dict):
        raise ConfigError("", f"a profile must be a mapping, got {type(doc).__name__}", source=str(path))
    try:
        prof = build(ComputeProfile, doc)
    except ConfigError as e:
        raise e.with_source(str(path)) from None
    for field in ("cpus_per_task", "array_parallelism", "time_min"):
        if getattr(prof, field) < 1:
            raise ConfigError(field, f"must be >= 1, got {getattr(prof, field)}", source=str(path))
    if prof.gpus_per_task < 0 or prof.max_parallel_local < 0 or prof.mem_gb <= 0:
        raise ConfigError("gpus_per_task/max_parallel_local/mem_gb", "must not be negative (mem_gb > 0)",
                          source=str(path))
    return prof
