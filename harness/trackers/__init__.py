"""Experiment trackers: a run also reports to Weights & Biases, TensorBoard or MLflow while it trains.

``train.report_to: [wandb, tensorboard, mlflow]`` (a study's ``base``, a ``--set``, or one run's config), in
the spirit of the transformers Trainer's ``report_to``. The results store stays the source of truth; a
tracker is a live view of it:

* one tracker run per harness run, named ``<variant label> seed=<seed>``, grouped by study (W&B group,
  MLflow experiment, a TensorBoard folder per study) and tagged with the run id; the resolved config is
  logged as its parameters;
* every ``train.log_every`` steps, on both protocols, what ``metrics.jsonl`` gets: loss, learning rate,
  throughput (items/s, tokens/s) and tokens seen, as ``train/<key>``;
* at the end, the final metrics *of the store's record*: ``eval/<task>/<metric>``, ``tokens/<key>``;
* a requeued or resumed run continues the same tracker run: the ids are kept in ``<run dir>/trackers.json``
  (TensorBoard purges the steps the killed attempt logged after its checkpoint; MLflow and W&B skip or
  drop steps they already have);
* offline by default: W&B in offline mode (``WANDB_MODE`` overrides), TensorBoard event files, an MLflow
  file store (``MLFLOW_TRACKING_URI`` overrides), all under ``<results>/trackers/``; docs/trackers.md says
  how to look at them and sync them later with each tracker's own command;
* a missing package or a tracker that raises is a warning in the run log (and in ``trackers.json``): that
  tracker is dropped for the rest of the run, which goes on and keeps every metric.

``harness.sweep.job.run_job`` opens a :class:`Session` per run; the training loops call :func:`log_train`,
which is a no-op when no session is active. Backends live in :mod:`harness.trackers.backends`; another one
is added with :func:`register_tracker`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.store import atomic_write_json
from harness.trackers import backends as _backends  # noqa: F401  (registers wandb, tensorboard, mlflow)
from harness.trackers.base import TRACKERS, Tracker, TrackerRun, final_metrics, flat_config, register_tracker, scalars

__all__ = ["STATE_FILE", "TRACKERS", "Session", "Tracker", "TrackerRun", "activated", "close_session",
           "final_metrics", "flat_config", "log_train", "open_session", "register_tracker", "standalone_session",
           "sweep_session"]

STATE_FILE = "trackers.json"


@dataclass
class Session:
    """The trackers of one execution of one run. Never raises from a tracker's error."""

    run: TrackerRun
    names: list[str]
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    trackers: list[Tracker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, Any] = field(default_factory=dict)  # tracker name -> what continues its run
    link_map: dict[str, str] = field(default_factory=dict)  # tracker name -> its run, as started

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"[trackers] warning: {msg}", file=self.stream, flush=True)

    def _drop(self, t: Tracker, what: str, e: Exception) -> None:
        self.warn(f"{t.name}: {what} failed ({type(e).__name__}: {str(e).strip()[:300]}); no more {t.name} "
                  "logging in this run (the run goes on; its metrics are in the store)")
        if t in self.trackers:
            self.trackers.remove(t)
        with contextlib.suppress(Exception):
            t.close()

    def _guard(self, t: Tracker, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a tracker never fails the run
            self._drop(t, what, e)

    def start(self) -> Session:
        """Open every tracker of ``names`` (continuing the runs ``trackers.json`` names)."""
        path = self.run.run_dir / STATE_FILE
        try:
            saved = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            saved = {}
        self.states = dict(saved.get("runs") or {}) if isinstance(saved, dict) else {}
        for name in self.names:
            cls = TRACKERS.get(name)
            if cls is None:
                self.warn(f"{name}: no such tracker (known: {', '.join(TRACKERS)}); not logged to it")
                continue
            try:
                t = cls(self.run, self.states.get(name))
                state = t.start()
            except ImportError as e:
                self.warn(f"{name}: not installed ({e}); `pip install {cls.install or name}` to log to it; "
                          "this run goes on without it")
                continue
            except Exception as e:  # noqa: BLE001 - a tracker never fails the run
                self.warn(f"{name}: start failed ({type(e).__name__}: {str(e).strip()[:300]}); this run is not "
                          f"logged to {name} (it goes on; its metrics are in the store)")
                continue
            self.states[name] = state
            self.trackers.append(t)
            with contextlib.suppress(Exception):
                self.link_map[name] = t.link()
        self._save()
        return self

    def _save(self) -> None:
        with contextlib.suppress(OSError):  # the run's own writes say it when the disk is full
            atomic_write_json(self.run.run_dir / STATE_FILE,
                              {"runs": self.states, "links": self.links(), "warnings": self.warnings})

    def links(self) -> dict[str, str]:
        """Where each tracker run that started is (a URL, or its offline folder or store)."""
        return dict(self.link_map)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        vals = scalars(metrics)
        for t in list(self.trackers):
            self._guard(t, f"log at step {step}", lambda t=t: t.log(vals, step))

    def finish(self, record: dict[str, Any]) -> None:
        """Log the record's final metrics and close every tracker (once)."""
        final, ok = final_metrics(record), record.get("status") == "done"
        for t in list(self.trackers):
            self._guard(t, "finish", lambda t=t: t.finish(final, self.run.steps, ok))
        self.trackers.clear()
        if self.warnings:  # the ones logging and finishing added
            self._save()


_ACTIVE: list[Session] = []


@contextlib.contextmanager
def activated(session: Session | None) -> Iterator[Session | None]:
    """Make ``session`` the one :func:`log_train` reports to while the block runs."""
    if session is None:
        yield None
        return
    _ACTIVE.append(session)
    try:
        yield session
    finally:
        _ACTIVE.remove(session)


def log_train(step: int, rec: dict[str, Any]) -> None:
    """Report one ``metrics.jsonl`` record (loss, lr, items/s, tokens/s, tokens seen, ...) as
    ``train/<key>`` at ``step`` to the active session; nothing without one."""
    if _ACTIVE:
        _ACTIVE[-1].log({f"train/{k}": v for k, v in rec.items() if k not in ("step", "elapsed_s")}, step)


def open_session(run: TrackerRun, names: list[str], stream: TextIO | None = None) -> Session | None:
    """A started :class:`Session` for ``names`` (None when there are none)."""
    if not names:
        return None
    return Session(run, list(names), **({"stream": stream} if stream else {})).start()


def close_session(session: Session | None, record: dict[str, Any]) -> None:
    if session is not None:
        session.finish(record)


def sweep_session(run: TrackerRun) -> Session | None:
    """The session of a sweep job: the trackers of its config's ``train.report_to`` (None without any),
    ``steps`` taken from its ``train.steps``."""
    train = run.config.get("train") or {}
    run.steps = int(train.get("steps", run.steps))
    return open_session(run, list(train.get("report_to") or []))


def standalone_session(config: dict[str, Any], run_dir: Path, study: str) -> Session | None:
    """A session for a run started outside the sweep (``python -m harness.train`` / ``harness.probe``):
    named after its run dir, grouped under ``study``, files in ``<run dir>/trackers/``."""
    names = list((config.get("train") or {}).get("report_to") or [])
    run = TrackerRun(run_id=run_dir.name, study=study, label="", seed=int(config.get("seed", 0)), config=config,
                     root=run_dir / "trackers", run_dir=run_dir, steps=int((config.get("train") or {}).get("steps", 0)))
    run_dir.mkdir(parents=True, exist_ok=True)
    return open_session(run, names)

