"""Training on LLaVA-schema conversations through the streaming pipeline: a random-weight SigLIP tower
(transformers config) online, a small random Qwen2 with a locally trained BPE tokenizer and chat
template, real DataLoader workers; exact resume, bad data counted or stopping the run, fp32 master
weights under a bf16 LLM, and the paper preset's random_init needing nothing it cannot build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import harness.train as train_mod
from harness.config import RunConfig, build
from harness.data.llava_sample import make_llava_sample
from harness.data.pipeline import DataFailureError
from harness.train import load_model, train_run

SIGLIP = {"name": "siglip", "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8}}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return make_llava_sample(tmp_path_factory.mktemp("llava") / "data", n_videos=8, long_frames=400)


def _cfg(sample: dict, tmp: Path, data: dict | None = None, **train) -> RunConfig:
    return build(RunConfig, {
        "data": {"dataset": "llava_video", "args": {"mixture": sample["mixture"]}, "n_frames": 4,
                 "manifest_dir": str(tmp / "manifests"), "cache_dir": str(tmp / "cache"), "workers": 2,
                 "max_failure_rate": 0.5, **(data or {})},
        "model": {"encoder": SIGLIP, "llm": {"bpe_vocab_size": 400},
                  "compressor": {"d_in": 32, "block": "conv", "spatial": {"period": 4, "n_layers": 1}}},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 3, "log_every": 1, **train},
    })


@pytest.mark.slow
def test_trains_resumes_exactly_and_counts_bad_videos(sample, tmp_path, monkeypatch):
    cfg = _cfg(sample, tmp_path)
    full = train_run(cfg, tmp_path / "full", progress=False)
    assert full["template"] == "chat" and full["dataset_identity"].startswith("llava_video:")
    assert full["n_train_items"] == 20 and full["manifest"]["n_malformed"] == 4
    # every damaged video that was drawn is listed with its reason; none counted as trained
    failed = full["failed_items"]
    assert failed and set(failed) <= {"damaged_0", "damaged_1", "damaged_2", "damaged_3"}
    assert full["data_failures"]["n_failures"] >= len(failed)
    lines = (tmp_path / "full" / "failed_items.jsonl").read_text().splitlines()
    assert {json.loads(x)["id"] for x in lines} == set(failed)

    calls = {"n": 0}
    real = train_mod.compute_loss

    def dies_after_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "compute_loss", dies_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(train_mod, "compute_loss", real)
    resumed = train_run(cfg, tmp_path / "killed", progress=False)
    assert resumed["resumed_from"] == 3
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["failed_items"] == failed  # the failure log survives the restart
    model, _ = load_model(tmp_path / "full")  # the export loads, tokenizer and chat template included
    assert model.tokenizer.chat_template and model.tokenizer.eos_token == "<|im_end|>"


def test_too_many_failures_stop_early_with_the_list(sample, tmp_path):
    # malformed records: 4 of 24 (17 %) above 5 % -> refused before any model is built
    with pytest.raises(DataFailureError, match="4 of 24 records are malformed") as e:
        train_run(_cfg(sample, tmp_path, {"max_failure_rate": 0.05, "workers": 0}), tmp_path / "a", progress=False)
    assert any("not JSON" in v for v in e.value.failed.values())
    assert json.loads((tmp_path / "a" / "failure.json").read_text())["error"] == "DataFailureError"
    # damaged videos: the cap records without the malformed one (4 of 12 videos damaged), 1 % threshold
    recs = [r for r in json.loads(Path(sample["cap"]).read_text()) if r["conversations"][0]["from"] == "human"]
    (tmp_path / "cap.json").write_text(json.dumps(recs))
    args = {"path": str(tmp_path / "cap.json"), "video_root": str(Path(sample["cap"]).parent)}
    cfg = _cfg(sample, tmp_path, {"args": args, "max_failure_rate": 0.01, "min_failure_sample": 4, "workers": 0},
               steps=20)
    with pytest.raises(DataFailureError, match="item reads failed") as e:
        train_run(cfg, tmp_path / "b", progress=False)
    assert set(e.value.failed) <= {"damaged_0", "damaged_1", "damaged_2", "damaged_3"}
    assert not (tmp_path / "b" / "train_summary.json").exists()


def test_bf16_llm_gets_a_2e5_update_through_fp32_master_weights(sample, tmp_path):
    cfg = _cfg(sample, tmp_path, {"workers": 0}, steps=2, lr=2e-5, warmup_steps=0, checkpoint_every=2,
               train_modules=["llm"])
    cfg.model.llm.dtype = "bfloat16"
    train_run(cfg, tmp_path / "run", progress=False)
    from harness.model.tokenizer import load_tokenizer

    torch.manual_seed(cfg.seed)
    init = train_mod.build_model(cfg, load_tokenizer(tmp_path / "run" / "model")).state_dict()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    llm = [k for k in state if k.startswith("llm.") and state[k].is_floating_point()]
    assert all(state[k].dtype == torch.float32 for k in llm)  # master weights are fp32
    changed = sum(int((state[k] != init[k].float()).sum()) for k in llm)
    total = sum(state[k].numel() for k in llm)
    assert changed / total > 0.99, changed / total
    # the same step applied to the bf16 weights themselves is mostly lost (what the master copy fixes)
    w = init["llm.model.layers.0.mlp.up_proj.weight"].clone().requires_grad_(True)
    opt = torch.optim.AdamW([w], lr=2e-5)
    w.grad = torch.randn_like(w)
    before = w.detach().clone()
    opt.step()
    assert (w.detach() != before).float().mean() < 0.5


def test_paper_random_init_builds_what_it_needs_and_fails_fast(sample, tmp_path):
    from transformers import Qwen2Config

    shape = tmp_path / "qwen2_small"
    Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=1000, max_position_embeddings=4096).save_pretrained(shape)
    cfg = _cfg(sample, tmp_path, {"workers": 0}, steps=2, checkpoint_every=2)
    cfg.model.llm.preset, cfg.model.llm.random_init, cfg.model.llm.name_or_path = "paper", True, str(shape)
    summary = train_run(cfg, tmp_path / "run", progress=False)  # no tokenizer anywhere: one is learnt
    assert summary["template"] == "chat" and (tmp_path / "run" / "model" / "tokenizer.json").is_file()
    # a named tokenizer that is missing fails before the manifest is read or a model built
    bad = _cfg(sample, tmp_path, {"workers": 0, "manifest_dir": str(tmp_path / "never")})
    bad.model.llm.preset, bad.model.llm.name_or_path = "paper", str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        train_run(bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_sweep_trains_the_offline_twin_of_five_way_paper(sample, tmp_path):
    from harness.data.synthetic import SuiteSpec, make_suite
    from harness.store import ResultsStore
    from harness.sweep import run_sweep

    suite = tmp_path / "mia"
    make_suite(suite, SuiteSpec(n_train=8, n_val=0, n_test=24, frames_long=16, frames_dense=16), workers=1,
               progress=False)
    sets = [f"base.data.args.mixture={sample['mixture']}", f"base.data.suite={suite}",
            f"base.data.cache_dir={tmp_path / 'cache'}", f"base.data.manifest_dir={tmp_path / 'manifests'}",
            "grid.data.n_frames=[4]", "seeds=[2025]", "base.train.steps=4", "base.data.workers=0",
            "base.data.max_failure_rate=0.5"]
    spec = Path(__file__).resolve().parents[1] / "ablations" / "five_way_paper_twin.yaml"
    out = run_sweep(spec, sets, results=tmp_path / "res", executor="debug", report=False, progress=False,
                    log=lambda s: None)
    store = ResultsStore(tmp_path / "res" / "store")
    recs = [store.read_run(r.run_id) for r in out.plan.runs]
    assert out.exit_code == 0, [r.get("reason") for r in recs]
    assert len(recs) == 5 and all(r["status"] == "done" for r in recs)
    summaries = [json.loads((tmp_path / "res" / "runs" / r["run_id"] / "train_summary.json").read_text())
                 for r in recs]
    assert {s["dataset_identity"] for s in summaries} == {summaries[0]["dataset_identity"]}
    assert all(s["dataset"] == "llava_video" and s["template"] == "chat" for s in summaries)
    assert all({"mia_long", "mia_dense"} <= {m["task"] for m in r["metrics"]} for r in recs)


def test_feature_cache_with_a_size_budget(sample, tmp_path):
    on = {"workers": 0, "feature_cache": "on", "cache_budget_gb": 3 * 4 * 16 * 32 * 4 / 2**30}  # 3 entries
    first = train_run(_cfg(sample, tmp_path, on, steps=2, checkpoint_every=2), tmp_path / "a", progress=False)
    f = first["features"]
    assert f["cache_hits"] == 0 and f["cache_bytes_added"] == 3 * 4 * 16 * 32 * 4 and f["cache_skipped_budget"] > 0
    again = train_run(_cfg(sample, tmp_path, on, steps=2, checkpoint_every=2, lr=2e-3), tmp_path / "b",
                      progress=False)
    assert again["features"]["cache_hits"] >= 1  # what the budget let in is read back, not re-encoded
    off = train_run(_cfg(sample, tmp_path, {"workers": 0}, steps=2, checkpoint_every=2), tmp_path / "c",
                    progress=False)
    assert off["features"]["cache_bytes_added"] == 0 and off["features"]["encoded"] > 0
