"""The probe protocol (harness/probe): fit + score on a small compress suite, through the sweep's job body."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import RunConfig, build, config_hash, to_dict
from harness.data.synthetic import GROUPS, SuiteSpec, make_suite
from harness.probe.data import check_fixed_options
from harness.sweep.job import train_and_evaluate
from harness.trackers import Tracker


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "suite"
    make_suite(out, SuiteSpec(families=GROUPS["compress"], n_train=48, n_val=0, n_test=24, frames_dense=16),
               workers=1, progress=False)
    return out


def _cfg(suite: Path, tmp: Path, **over) -> RunConfig:
    d = {"protocol": "probe", "seed": 0,
         "model": {"compressor": {"block": "identity", "spatial": {"period": 16, "n_layers": 1}}},
         "data": {"suite": str(suite), "cache_dir": str(tmp / "cache"), "n_frames": 8},
         "train": {"steps": 6, "batch_size": 8, "warmup_steps": 1, "log_every": 2},
         "eval": {"tasks": ["mia_compress"], "batch_size": 8}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return build(RunConfig, d)


def test_protocol_is_part_of_the_run_id():
    lmm = build(RunConfig, {})
    assert to_dict(lmm)["protocol"] == "lmm"  # every field is hashed but where a run reports (UNHASHED_FIELDS)
    assert config_hash(build(RunConfig, {"protocol": "probe"})) != config_hash(lmm)


def test_job_body_runs_the_probe_and_reruns_reuse_its_weights(suite, tmp_path):
    cfg = _cfg(suite, tmp_path)
    run = tmp_path / "run"
    res = train_and_evaluate(cfg, run)
    rows = {r["task"]: r for r in res["metrics"]}
    assert {"mia_pair_order", "mia_mark_place", "mia_flash_when", "mia_compress", "mia_all"} <= set(rows)
    assert rows["mia_compress"]["n"] == 24 and 0.0 <= rows["mia_compress"]["value"] <= 1.0
    assert res["extra"]["protocol"] == "probe" and res["extra"]["train_steps"] == 6
    assert res["tokens"] == {"visual_in": 8 * 64, "llm_visual": 8 * 4, "llm_visual_min": 32, "llm_visual_max": 32}
    preds = (run / "eval" / "probe_predictions.jsonl").read_text()
    again = train_and_evaluate(cfg, run)  # probe.pt is there: scored again, same predictions
    assert again["metrics"] == res["metrics"] and (run / "eval" / "probe_predictions.jsonl").read_text() == preds
    fresh = train_and_evaluate(cfg, tmp_path / "run2")  # same seed, new dir: the same run
    assert fresh["metrics"] == res["metrics"]


def test_a_failed_test_video_counts_as_wrong(suite, tmp_path):
    import shutil

    broken = tmp_path / "suite"
    shutil.copytree(suite, broken)
    victim = sorted((broken / "videos" / "test").glob("flash_when-*"))[0]
    victim.write_bytes(b"not a video")
    res = train_and_evaluate(_cfg(broken, tmp_path), tmp_path / "run")
    rows = {r["task"]: r for r in res["metrics"]}
    assert rows["mia_flash_when"]["n"] == 8 and rows["mia_compress"]["n"] == 24  # kept, as a wrong answer
    assert res["extra"]["n_failed"] == 1


def test_families_with_varying_options_are_refused():
    items = [{"id": "a", "family": "order", "question": "what appeared right after the red square ?",
              "options": ["x", "y", "z", "w"]},
             {"id": "b", "family": "order", "question": "what appeared right after the blue cross ?",
              "options": ["x", "y", "z", "w"]}]
    with pytest.raises(ValueError, match="family 'order'.*item b.*compress group"):
        check_fixed_options(items, "suite (test)")


def test_time_axis_aggregator_runs_under_the_probe_in_time_slots(suite, tmp_path):
    """v2's TAA keeps a data-dependent subset of frames: the probe reads the kept frames' tokens in their
    time slots (a fixed-size read-out), counts the tokens really kept, and logs the delta trace."""
    import torch

    from harness.probe.model import ProbeModel

    taa = {"enabled": True, "n_layers": 1, "sampling": "delta", "relative": True, "keep_ratio": 0.5}
    cfg = _cfg(suite, tmp_path, model={"compressor": {"block": "bi_ssm", "pooling": "gpa", "taa": taa,
                                                      "spatial": {"period": 8, "n_layers": 1}}})
    model = ProbeModel(cfg, ["pair_order", "mark_place", "flash_when"])
    feats = torch.randn(3, 8, 64, cfg.model.compressor.d_in)
    out = model.compressor(feats)
    kept, Q = out.aux["kept_steps"], 8  # one GPA anchor per row of 8 patches
    slots = model.slotted(out).view(3, 8, Q, -1)
    assert slots.shape[1] == 8 and out.tokens.shape[1] == kept.shape[1] * Q < 8 * Q
    for b in range(3):
        dropped = sorted(set(range(8)) - set(kept[b].tolist()))
        assert torch.equal(slots[b, kept[b]], out.tokens[b].view(-1, Q, slots.shape[-1]))
        assert not slots[b, dropped].any()
    assert torch.equal(model.kept_tokens(out), out.aux["n_selected"].long() * Q)
    res = train_and_evaluate(cfg, tmp_path / "run")
    assert 0 < res["tokens"]["llm_visual"] <= 8 * Q
    assert res["extra"]["compressor_ms"] > 0 and len(res["extra"]["taa_trace"]["delta"]) == 8
    with pytest.raises(ValueError, match="model.compressor.budget"):
        ProbeModel(_cfg(suite, tmp_path, model={"compressor": {**cfg_dict(cfg), "budget": 8}}), ["mark_place"])


def cfg_dict(cfg: RunConfig) -> dict:
    return to_dict(cfg)["model"]["compressor"]


class Interrupt(Tracker):
    """Stops the fit between its checkpoint at step 4 and its end, as Ctrl-C or a kill would."""

    name = "interrupt"

    def log(self, metrics: dict, step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt


def test_a_probe_fit_writes_as_it_goes_and_resumes_from_its_checkpoint_to_the_same_run(suite, tmp_path, monkeypatch):
    import json

    import torch

    from harness import trackers
    from harness.probe import fit

    monkeypatch.setitem(trackers.TRACKERS, "interrupt", Interrupt)
    cfg = _cfg(suite, tmp_path, train={"checkpoint_every": 2, "log_every": 1})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _, summary = fit(cfg, whole)
    assert summary["resumed_from"] == 0 and not (whole / "checkpoint.pt").exists()  # probe.pt took over
    run = trackers.TrackerRun("r", "s", "", 0, to_dict(cfg), tmp_path / "trk", cut)
    with pytest.raises(KeyboardInterrupt), trackers.activated(trackers.open_session(run, ["interrupt"])):
        fit(cfg, cut)
    assert (cut / "config.json").is_file() and (cut / "checkpoint.pt").is_file() and not (cut / "probe.pt").exists()

    def rows(d: Path) -> list[tuple]:
        return [(r["step"], r["loss"], r["lr"], r["tokens_seen"])
                for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]

    assert [r[0] for r in rows(cut)] == [1, 2, 3, 4, 5]  # written as it went, up to the interruption
    _, summary = fit(cfg, cut)  # on from the checkpoint at step 4: the same batches, the same run
    assert summary["resumed_from"] == 4 and rows(cut) == rows(whole)
    a, b = (torch.load(d / "probe.pt", weights_only=True)["model"] for d in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
