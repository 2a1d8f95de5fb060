"""Trackers (harness.trackers, issue 29): a sweep's runs report to TensorBoard, MLflow and W&B (offline) with
the libraries themselves, read back with their own readers (TensorBoard's event reader, MLflow's file store,
W&B's offline run file); a tracker that raises on every call or is not installed never fails a run; trackers
never change a run's id."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import trackers
from harness.config import RunConfig, build, config_hash, to_dict
from harness.report import report_study, tracker_links
from harness.store import ResultsStore
from harness.sweep import run_sweep
from harness.sweep.plan import plan_study
from harness.sweep.spec import load_spec


def study(tmp_path: Path, suite: Path, report_to: str, name: str = "trk") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""
study: {name}
base:
  protocol: probe
  model: {{compressor: {{block: identity, spatial: {{period: 16, n_layers: 1}}}}}}
  data: {{suite: {suite}, cache_dir: {suite.parent / 'cache'}, n_frames: 8}}
  train: {{steps: 6, batch_size: 8, warmup_steps: 1, log_every: 2, report_to: {report_to}}}
  eval: {{batch_size: 8}}
grid:
  model.compressor.pooling: [weighted]
seeds: [0]
suites: [mia_compress]
""")
    return p


def sweep(spec: Path, res: Path, *sets: str) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    lines: list[str] = []
    out = run_sweep(spec, list(sets), results=res, executor="debug", progress=False, report=False, log=lines.append)
    assert out.exit_code == 0, "\n".join(lines)
    (run,) = out.plan.runs
    rec = ResultsStore(res / "store").read_run(run.run_id)
    metrics = [json.loads(ln) for ln in (res / "runs" / run.run_id / "metrics.jsonl").read_text().splitlines()]
    return run, rec, metrics


def wandb_records(run_dir: Path) -> dict[str, Any]:
    """The run, history rows and summary of a W&B offline run folder, read with W&B's own reader."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (f,) = run_dir.glob("*.wandb")
    ds = datastore.DataStore()
    ds.open_for_scan(str(f))
    out: dict[str, Any] = {"history": [], "summary": {}}
    while (data := ds.scan_data()) is not None:
        r = pb.Record()
        r.ParseFromString(data)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return out


def test_a_sweep_reports_to_tensorboard_mlflow_and_wandb_offline(tmp_path, compress_suite, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = tmp_path / "res"
    run, rec, metrics = sweep(study(tmp_path, compress_suite, "[tensorboard, mlflow, wandb]"), res)
    assert rec["status"] == "done" and set(rec["trackers"]) == {"tensorboard", "mlflow", "wandb"}
    assert [m["step"] for m in metrics] == [2, 4, 6]
    assert {"loss", "lr", "items_per_s", "tokens_per_s", "tokens_seen"} <= set(metrics[0])
    final = {f"eval/{m['task']}/{m['metric']}": m["value"] for m in rec["metrics"]}  # the store's record
    assert "eval/mia_compress/acc" in final
    state = json.loads((res / "runs" / run.run_id / "trackers.json").read_text())
    assert state["warnings"] == [] and state["links"] == rec["trackers"]

    # TensorBoard: one folder per run under the study's, every logged step once, the final metrics
    tb = Path(rec["trackers"]["tensorboard"])
    assert tb.parent == res / "trackers" / "tensorboard" / "trk" and tb.name.endswith(run.run_id)
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([m["lr"] for m in metrics])
    assert acc.Scalars("train/tokens_seen")[-1].value == metrics[-1]["tokens_seen"]
    assert acc.Scalars("eval/mia_compress/acc")[0].value == pytest.approx(final["eval/mia_compress/acc"])
    assert "config/text_summary" in acc.Tags()["tensors"]

    # MLflow: the file store under results/trackers, an experiment per study, the config as parameters
    client = MlflowClient(tracking_uri=(res / "trackers" / "mlflow").as_uri())
    ml = client.get_run(state["runs"]["mlflow"]["run_id"])
    assert client.get_experiment(ml.info.experiment_id).name == "trk"
    assert ml.info.run_name == f"{run.label} seed=0" and ml.info.status == "FINISHED"
    assert ml.data.tags["run_id"] == run.run_id and ml.data.params["train.steps"] == "6"
    assert ml.data.params["model.compressor.pooling"] == "weighted"
    hist = client.get_metric_history(ml.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(m["step"], pytest.approx(m["loss"])) for m in metrics]
    assert ml.data.metrics["eval/mia_compress/acc"] == pytest.approx(final["eval/mia_compress/acc"])

    # W&B offline: named by label and seed, grouped by study, tagged with the run id
    wb = wandb_records(Path(rec["trackers"]["wandb"]))
    assert wb["run"].run_id == state["runs"]["wandb"]["id"] and wb["run"].display_name == f"{run.label} seed=0"
    assert wb["run"].run_group == "trk" and list(wb["run"].tags) == [run.run_id]
    rows = [h for h in wb["history"] if "train/loss" in h]
    assert [(h["_step"], h["train/loss"]) for h in rows] == [(m["step"], pytest.approx(m["loss"])) for m in metrics]
    assert wb["summary"]["eval/mia_compress/acc"] == pytest.approx(final["eval/mia_compress/acc"])
    assert Path(rec["trackers"]["wandb"]).parent == res / "trackers" / "wandb" / "wandb"


class Broken(trackers.Tracker):
    """A tracker whose every call raises (a server down, a full quota)."""

    name = "broken"
    calls = 0

    def start(self) -> dict[str, Any]:
        type(self).calls += 1
        return {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        type(self).calls += 1
        raise ConnectionError("tracker server unreachable")

    def finish(self, final: dict[str, float], step: int, ok: bool) -> None:
        raise ConnectionError("tracker server unreachable")


def test_a_tracker_that_raises_or_is_missing_leaves_the_run_done_with_all_its_metrics(tmp_path, compress_suite,
                                                                                    monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setitem(trackers.TRACKERS, "broken", Broken)
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")] or ["mlflow"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import mlflow` fails as on a machine without it
    res = tmp_path / "res"
    run, rec, metrics = sweep(study(tmp_path, compress_suite, "[broken, mlflow, tensorboard]"), res)
    assert rec["status"] == "done" and len(rec["metrics"]) == 5 and [m["step"] for m in metrics] == [2, 4, 6]
    assert Broken.calls == 2  # started, then dropped after its first failing call
    err = capsys.readouterr().err
    assert "[trackers] warning: broken: log at step 2 failed (ConnectionError: tracker server unreachable)" in err
    assert "[trackers] warning: mlflow: not installed" in err and "pip install mlflow-skinny" in err
    state = json.loads((res / "runs" / run.run_id / "trackers.json").read_text())
    assert len(state["warnings"]) == 2 and set(rec["trackers"]) == {"broken", "tensorboard"} == set(state["links"])
    acc = EventAccumulator(rec["trackers"]["tensorboard"])  # the healthy tracker has everything
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6]
    report_study(ResultsStore(res / "store"), "trk", tmp_path / "report", progress=False)
    index = (tmp_path / "report" / "index.md").read_text()  # each run's row links its tracker runs
    assert "| Reason | Trackers |" in index and f"tensorboard: `{rec['trackers']['tensorboard']}`" in index
    assert tracker_links({"wandb": "https://wandb.ai/e/p/runs/x"}) == "[wandb](https://wandb.ai/e/p/runs/x)"


def test_trackers_change_no_run_id_and_no_checkpoint(tmp_path, compress_suite):
    plain = load_spec(study(tmp_path, compress_suite, "[]"))
    tracked = load_spec(study(tmp_path, compress_suite, "[tensorboard, wandb]", name="trk2"))
    assert [r.run_id for r in plan_study(plain).runs] == [r.run_id for r in plan_study(tracked).runs]
    a, b = build(RunConfig, {}), build(RunConfig, {"train": {"report_to": ["mlflow"]}})
    assert config_hash(a) == config_hash(b) and to_dict(b)["train"]["report_to"] == ["mlflow"]
    c = build(RunConfig, {"train": {"activation_checkpointing": True, "compile_compressor": True}})
    assert config_hash(c) == config_hash(a) and to_dict(c)["train"]["activation_checkpointing"] is True
    res = tmp_path / "res"
    run, _, _ = sweep(study(tmp_path, compress_suite, "[]"), res)
    again = run_sweep(study(tmp_path, compress_suite, "[tensorboard]"), [], results=res, executor="debug",
                      progress=False, report=False, log=lambda s: None)
    assert [r.action for r in again.plan.runs] == ["skip"]  # adding a tracker reuses the finished result


def test_session_log_drops_non_numbers_and_names_the_tracker_run(tmp_path):
    run = trackers.TrackerRun(run_id="abc123", study="s", label="block=bi_ssm, period=8", seed=2, config={},
                              root=tmp_path, run_dir=tmp_path)
    assert run.name == "block=bi_ssm, period=8 seed=2" and run.folder == "block=bi_ssm_period=8_seed2_abc123"
    assert trackers.flat_config({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": "[1,2]", "d": "{}"}
    rec = {"status": "done", "metrics": [{"task": "t", "metric": "acc", "value": 0.5}], "tokens": {"llm_visual": 4},
           "wall_time_s": 2.0}
    assert trackers.final_metrics(rec) == {"eval/t/acc": 0.5, "tokens/llm_visual": 4.0, "run/wall_time_s": 2.0}
    assert trackers.base.scalars({"a": 1, "b": True, "c": "x", "d": math.nan, "e": 2.5}) == {"a": 1.0, "e": 2.5}


def test_an_lmm_run_of_harness_train_reports_its_steps(tmp_path, compress_suite):
    """The LMM protocol, started on its own (``python -m harness.train ... train.report_to=[tensorboard]``):
    every logged step, its grad norm and tokens, in <run dir>/trackers/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.train import main

    run_dir = tmp_path / "lmm"
    assert main(["tiny", "train.steps=2", "train.log_every=1", "train.batch_size=4", "train.warmup_steps=1",
                 "model.compressor.block=identity", f"data.suite={compress_suite}",
                 f"data.cache_dir={compress_suite.parent / 'cache'}",
                 "train.report_to=[tensorboard]", "--run-dir", str(run_dir), "--no-progress"]) == 0
    metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (tb,) = (run_dir / "trackers" / "tensorboard" / "harness.train").iterdir()
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    for key in ("loss", "lr", "grad_norm", "items_per_s", "tokens_per_s", "tokens_seen"):
        assert [(e.step, e.value) for e in acc.Scalars(f"train/{key}")] == [
            (m["step"], pytest.approx(m[key], rel=1e-5)) for m in metrics], key
    assert metrics[-1]["tokens_seen"] > metrics[0]["tokens_seen"] > 0
