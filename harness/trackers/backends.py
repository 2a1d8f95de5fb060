"""The tracker backends ``train.report_to`` names: ``wandb``, ``tensorboard``, ``mlflow``.

Each uses the library itself, imported when a run first reports to it (a missing package is then the
Session's warning, not an error). All three are offline by default and write under ``<results>/trackers/``:

* ``wandb``: ``wandb.init(mode="offline")`` (``WANDB_MODE`` overrides; ``WANDB_PROJECT`` names the project,
  default ``mambamia``) into ``trackers/wandb/wandb/offline-run-*``. A resumed run is initialised with the
  same run id (an offline resume starts a new offline folder of that id; ``wandb sync`` puts them together);
* ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in
  ``trackers/tensorboard/<study>/<label>_seed<seed>_<run id>/``; a resumed run purges the events the killed
  attempt logged at or after its first new step (``purge_step``);
* ``mlflow``: an ``MlflowClient`` on the file store ``trackers/mlflow`` (``MLFLOW_TRACKING_URI`` overrides),
  one experiment per study; a resumed run continues its MLflow run and skips steps it already holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.trackers.base import Tracker, flat_config, register_tracker


class TensorBoardTracker(Tracker):
    name, install = "tensorboard", "tensorboard"

    def start(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional package (tensorboard)

        self._writer_cls, self.writer = SummaryWriter, None
        default = self.run.root / "tensorboard" / self.run.study / self.run.folder
        self.logdir = Path(self.state.get("logdir") or default)
        return {"logdir": str(self.logdir)}

    def _w(self, step: int) -> Any:
        """The writer, opened on the first event: a resumed run purges what the killed attempt logged at
        or after ``step`` (its first new step), so every step appears once."""
        if self.writer is None:
            self.writer = self._writer_cls(log_dir=str(self.logdir), purge_step=step if self.resumed else None,
                                           flush_secs=10)
            if not self.resumed:
                from torch.utils.tensorboard.summary import hparams  # lazy: optional package (tensorboard)

                flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                        for k, v in flat_config(self.run.config).items()}
                for summary in hparams(flat, {"train/loss": 0.0}):
                    self.writer.file_writer.add_summary(summary)
                self.writer.add_text("config", "```json\n" + json.dumps(self.run.config, indent=1) + "\n```", 0)
                self.writer.add_text("run_id", self.run.run_id, 0)
        return self.writer

    def log(self, metrics: dict[str, float], step: int) -> None:
        w = self._w(step)
        for k, v in metrics.items():
            w.add_scalar(k, v, step)
        w.flush()  # visible to a running `tensorboard --logdir` now

    def finish(self, final: dict[str, float], step: int, ok: bool) -> None:
        w = self._w(step)
        for k, v in final.items():
            w.add_scalar(k, v, step)
        w.close()
        self.writer = None

    def link(self) -> str:
        return str(self.logdir)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive POSIX lock on ``path`` (creating an MLflow experiment: two runs of one study start at
    once, and the file store would make two experiments of one name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class MLflowTracker(Tracker):
    name, install = "mlflow", "mlflow-skinny"
    MAX_PARAMS = 100  # per log_batch call
    MAX_PARAM_LEN = 6000

    def start(self) -> dict[str, Any]:
        from mlflow.entities import Param  # lazy: optional package (mlflow)
        from mlflow.tracking import MlflowClient  # lazy: optional package (mlflow)

        store = self.run.root / "mlflow"
        uri = os.environ.get("MLFLOW_TRACKING_URI") or store.resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3.7+ keeps the file store in maintenance mode behind this switch. It is the store that
            # parallel jobs on a shared file system can write (one folder per run; SQLite over NFS cannot)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client, self.last_step = MlflowClient(tracking_uri=uri), -1
        if self.state.get("uri") == uri and self.state.get("run_id"):
            self.run_id, exp_id = self.state["run_id"], self.state.get("experiment_id")
            self.client.update_run(self.run_id, status="RUNNING")
            hist = self.client.get_metric_history(self.run_id, "train/loss")
            self.last_step = max((m.step for m in hist), default=-1)
        else:
            exp_id = self._experiment(store if uri.startswith("file:") else None)
            tags = {"run_id": self.run.run_id, "study": self.run.study, "label": self.run.label,
                    "seed": str(self.run.seed)}
            self.run_id = self.client.create_run(exp_id, run_name=self.run.name, tags=tags).info.run_id
            params = [Param(k[:250], str(v)[: self.MAX_PARAM_LEN]) for k, v in flat_config(self.run.config).items()]
            for i in range(0, len(params), self.MAX_PARAMS):
                self.client.log_batch(self.run_id, params=params[i: i + self.MAX_PARAMS])
        self.uri, self.exp_id = uri, exp_id
        return {"uri": uri, "experiment_id": exp_id, "run_id": self.run_id}

    def _experiment(self, store: Path | None) -> str:
        lock = _file_lock(store / ".create-experiment.lockf") if store is not None else contextlib.nullcontext()
        with lock:
            exp = self.client.get_experiment_by_name(self.run.study)
            return exp.experiment_id if exp is not None else self.client.create_experiment(self.run.study)

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric  # lazy: optional package (mlflow)

        ms = int(time.time() * 1000)
        batch = [Metric(k, v, ms, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i: i + 1000])

    def log(self, metrics: dict[str, float], step: int) -> None:
        if step > self.last_step:  # a resumed run: the killed attempt already logged up to last_step
            self._metrics(metrics, step)

    def finish(self, final: dict[str, float], step: int, ok: bool) -> None:
        self._metrics(final, step)
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def link(self) -> str:
        return f"{self.uri}#/experiments/{self.exp_id}/runs/{self.run_id}"


class WandbTracker(Tracker):
    name, install = "wandb", "wandb"

    def start(self) -> dict[str, Any]:
        mode = os.environ.get("WANDB_MODE") or "offline"
        if mode in ("offline", "disabled"):  # nothing leaves the machine: not W&B's crash reports either
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb  # lazy: optional package (wandb)

        project = self.state.get("project") or os.environ.get("WANDB_PROJECT") or "mambamia"
        wid = self.state.get("id") or wandb.util.generate_id()
        folder = self.run.root / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        kw: dict[str, Any] = {}
        if mode != "offline":
            kw["resume"] = "allow"  # offline runs cannot resume (W&B warns); the id is what joins them
        self.wrun = wandb.init(project=project, id=wid, name=self.run.name, group=self.run.study,
                               tags=[self.run.run_id], config=self.run.config, dir=str(folder), mode=mode,
                               job_type="train", reinit="create_new",
                               settings=wandb.Settings(silent=True, console="off"), **kw)
        self.mode = mode
        return {"id": wid, "project": project, "mode": mode}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.wrun.log(metrics, step=step)

    def finish(self, final: dict[str, float], step: int, ok: bool) -> None:
        self.wrun.summary.update(final)
        self.wrun.finish(exit_code=0 if ok else 1)

    def link(self) -> str:
        url = getattr(self.wrun, "url", None) if self.mode == "online" else None
        return str(url or self.wrun.settings.sync_dir)

    def close(self) -> None:
        self.wrun.finish(exit_code=1)


register_tracker("tensorboard", TensorBoardTracker)
register_tracker("mlflow", MLflowTracker)
register_tracker("wandb", WandbTracker)
