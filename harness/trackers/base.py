"""The parts every tracker backend shares: who a tracker run is (:class:`TrackerRun`), the backend
interface (:class:`Tracker`), the registry ``train.report_to`` names (:data:`TRACKERS`), and the metric
views of a config and a record."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrackerRun:
    """Who a tracker run is: the harness run it mirrors and where its files go."""

    run_id: str
    study: str
    label: str
    seed: int
    config: dict[str, Any]  # the resolved RunConfig
    root: Path  # <results>/trackers: offline files of every tracker
    run_dir: Path
    steps: int = 0  # train.steps: the step the final metrics are logged at

    @property
    def name(self) -> str:
        return f"{self.label} seed={self.seed}" if self.label else f"seed={self.seed}"

    @property
    def folder(self) -> str:
        """A file-name-safe name: ``<label>_seed<seed>_<run id>``."""
        base = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", f"{self.label}_seed{self.seed}" if self.label else f"seed{self.seed}")
        return f"{base.strip('_')[:100]}_{self.run_id}"


class Tracker:
    """One backend's run. ``state``: what an earlier attempt of this harness run saved (None: a new run).
    Every method may raise: the :class:`Session` turns that into a warning and drops the tracker."""

    name = "tracker"
    install = ""  # the pip requirement named when the package is missing

    def __init__(self, run: TrackerRun, state: dict[str, Any] | None):
        self.run, self.state, self.resumed = run, dict(state or {}), state is not None

    def start(self) -> dict[str, Any]:
        """Open (or continue) the tracker run; returns what a later attempt needs to continue it."""
        return {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalar ``metrics`` at training step ``step``."""

    def finish(self, final: dict[str, float], step: int, ok: bool) -> None:
        """Log the final metrics (from the store's record) and close the run (``ok``: the run is done)."""

    def link(self) -> str:
        """Where to find this run (a URL, or the folder of its offline files)."""
        return ""

    def close(self) -> None:
        """Best-effort cleanup after an error."""


#: tracker name -> class; ``train.report_to`` names these (harness.trackers.backends registers the three)
TRACKERS: dict[str, type[Tracker]] = {}


def register_tracker(name: str, cls: type[Tracker]) -> None:
    """Make ``train.report_to: [name]`` use ``cls`` (a :class:`Tracker` subclass)."""
    TRACKERS[name] = cls


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"steps": 3}}`` -> ``{"train.steps": 3}``; lists as compact JSON."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_config(v, key + "."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v, separators=(",", ":"), default=str)
        else:
            out[key] = v
    return out


def scalars(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """What a finished run's record says, as tracker metrics: ``eval/<task>/<metric>``, ``tokens/<key>``,
    ``run/wall_time_s``."""
    out: dict[str, float] = {}
    for m in record.get("metrics") or []:
        if isinstance(m, dict) and isinstance(m.get("value"), (int, float)):
            out[f"eval/{m.get('task')}/{m.get('metric')}"] = float(m["value"])
    out.update({f"tokens/{k}": v for k, v in scalars(record.get("tokens") or {}).items()})
    if isinstance(record.get("wall_time_s"), (int, float)):
        out["run/wall_time_s"] = float(record["wall_time_s"])
    return out
