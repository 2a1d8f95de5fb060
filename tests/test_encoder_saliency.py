"""The encoder's own attention for the training-free reducers: SigLIP's pooling-head (MAP) attention.

A random-init SigLIP tower with its head gives, per frame, the head probe's attention over the patches (a
hand computation of the multi-head attention agrees); CLIP, the tiny encoder and a SigLIP without head give
none (the reducers then use the token L2 norm). The cache keeps saliency as its own entry; a reducer that
reads it is fed it through the LMM and the evaluation records where its scores came from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import EncoderConfig, RunConfig, build, to_dict
from harness.data.cache import FeatureCache
from harness.data.encoders import build_encoder
from harness.data.examples import suite_texts
from harness.data.features import feature_key, saliency_key, video_features, video_inputs, video_saliency
from harness.data.synthetic import SuiteSpec, make_suite
from harness.data.video import write_video
from harness.evaluate import evaluate_native
from harness.identity import SALIENCY_VERSIONS, run_id_of, run_identity
from harness.model.compressors.base import TokenMeter
from harness.model.lmm import VideoLMM
from harness.model.presets import build_llm
from harness.model.registry import build_compressor, wants_saliency
from harness.model.tokenizer import build_word_tokenizer
from harness.probe.data import load_probe_items
from harness.probe.model import ProbeModel

TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "image_size": 32, "patch_size": 8}


def siglip(**extra) -> EncoderConfig:
    return build(EncoderConfig, {"name": "siglip", "config": {**TOWER, **extra}})


def frames(n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)


def test_siglip_map_attention_is_the_heads_probe_attention_by_hand():
    enc = build_encoder(siglip())
    assert enc.saliency_source == "siglip_map"
    fr = frames()
    sal = enc.encode_saliency(fr)
    assert sal.shape == (3, enc.num_patches) and torch.allclose(sal.sum(-1), torch.ones(3), atol=1e-5)
    x = (enc._preprocess(fr) - enc.mean) / enc.std
    last = enc.model(pixel_values=x).last_hidden_state  # (T, P, D), post-layernorm
    mha = enc._map_head().attention
    D, H = last.shape[-1], mha.num_heads
    wq, wk, _ = mha.in_proj_weight.split(D)
    bq, bk, _ = mha.in_proj_bias.split(D)
    q = (enc._map_head().probe @ wq.T + bq).view(1, H, D // H)  # (1, H, dh)
    k = (last @ wk.T + bk).view(3, -1, H, D // H)  # (T, P, H, dh)
    att = torch.softmax(torch.einsum("hd,tphd->thp", q[0], k) / math.sqrt(D // H), dim=-1).mean(1)
    torch.testing.assert_close(sal, att, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    build(EncoderConfig, {"name": "tiny"}),
    build(EncoderConfig, {"name": "clip", "config": TOWER}),
    siglip(vision_use_head=False),
], ids=["tiny", "clip", "siglip_without_head"])
def test_encoders_without_a_pooling_head_give_no_saliency(cfg):
    enc = build_encoder(cfg)
    assert enc.saliency_source is None and enc.encode_saliency(frames()) is None


def test_saliency_is_its_own_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    video = tmp_path / "v.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    data = build(RunConfig, {"data": {"n_frames": 4}}).data
    enc, cache = build_encoder(siglip()), FeatureCache(tmp_path / "cache")
    f, hit = video_features(str(video), data, enc, cache)
    assert not hit and len(cache) == 1
    key = feature_key(str(video), data, enc)
    assert cache.path(key).is_file()  # the features' entry and digest are as before
    assert saliency_key(key, "siglip_map").digest() != key.digest()
    f2, hit, sal = video_inputs(str(video), data, enc, cache, saliency=True)  # features-only: saliency computed
    assert hit and torch.equal(f, f2) and sal.shape == (4, enc.num_patches) and len(cache) == 2
    assert cache.misses == 2 and cache.writes == 2
    again = video_saliency(str(video), data, enc, cache)
    assert torch.equal(sal, again) and cache.writes == 2  # served from its entry
    assert video_saliency(str(video), data, build_encoder(build(EncoderConfig, {"name": "tiny"})), cache) is None
    other = build_encoder(build(EncoderConfig, {"name": "siglip", "seed": 1, "config": TOWER}))
    assert not video_inputs(str(video), data, other, cache, saliency=True)[1]  # other weights: both miss
    monkeypatch.setitem(SALIENCY_VERSIONS, "siglip_map", SALIENCY_VERSIONS["siglip_map"] + 1)
    writes = cache.writes
    video_saliency(str(video), data, enc, cache)  # a bumped source version is not served the old entry
    assert cache.writes == writes + 1


def test_a_cold_video_is_encoded_once_for_features_and_saliency(tmp_path: Path):
    video = tmp_path / "v.mp4"
    write_video(video, np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    data = build(RunConfig, {"data": {"n_frames": 4}}).data
    enc = build_encoder(siglip())
    calls: list[int] = []
    enc.model.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    f, hit, sal = video_inputs(str(video), data, enc, FeatureCache(tmp_path / "cache"), saliency=True)
    assert not hit and len(calls) == 1 and sal is not None
    plain, _ = video_features(str(video), data, enc, FeatureCache(tmp_path / "plain"))
    assert torch.equal(f, plain)  # the features are what a features-only run caches, bit for bit


def test_which_compressors_read_saliency():
    assert wants_saliency(build_compressor({"name": "visionzip"}).cfg)
    assert wants_saliency(build_compressor({"name": "fastvid"}).cfg)
    assert not wants_saliency(build_compressor({"name": "visionzip", "saliency": "l2_norm"}).cfg)
    for name in ("divprune", "random", "uniform_pool", "vidcom2", "mambamia", "vanilla"):
        assert not wants_saliency(build_compressor({"name": name}).cfg), name


def test_visionzip_keeps_what_the_encoder_attends_to_not_the_largest_norms():
    """Saliency and L2 norm disagree on purpose: the encoder's attention decides the dominant tokens."""
    vz = build_compressor({"name": "visionzip", "d_in": 8, "d_model": 8, "d_out": 8, "ratio": 2 / 16})
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 1, 16, 8, generator=g)
    feats[0, 0, :4] *= 10  # the four largest norms
    sal = torch.full((1, 1, 16), 0.01)
    sal[0, 0, [9, 13]] = 0.4  # the encoder looks elsewhere
    meter = TokenMeter(vz)
    out = vz(feats, sal)
    assert out.aux["saliency"] == "encoder" and meter.saliency == {"encoder"}
    plain = vz(feats)
    assert plain.aux["saliency"] == "l2_norm" and meter.saliency == {"encoder", "l2_norm"}
    assert not torch.equal(out.tokens, plain.tokens)

    def kept(red) -> set[int]:  # the input patches a reduction passes on unchanged (its dominant tokens)
        return {j for j in range(16) if any(torch.equal(t, feats[0, 0, j]) for t in red.tokens[0])}

    assert kept(vz.reduce(feats, 2, sal)) & {9, 13} and not kept(vz.reduce(feats, 2, sal)) & {0, 1, 2, 3}
    assert kept(vz.reduce(feats, 2, feats.norm(dim=-1))) & {0, 1, 2, 3}


def test_evaluation_feeds_the_map_attention_to_a_reducer_and_records_it(tmp_path: Path):
    make_suite(tmp_path / "suite", SuiteSpec(n_train=4, n_val=0, n_test=8, families=["count"],
                                             frames_long=16, frames_dense=16), workers=1, progress=False)
    cfg = build(RunConfig, {
        "data": {"suite": str(tmp_path / "suite"), "cache_dir": str(tmp_path / "cache"), "n_frames": 4},
        "model": {"encoder": {"name": "siglip", "dim": 32, "image_size": 32, "config": TOWER},
                  "compressor": {"name": "visionzip", "d_in": 32, "ratio": 4 / 64}},
        "eval": {"tasks": ["mia_count"], "batch_size": 4},
    })
    tok = build_word_tokenizer(suite_texts(cfg))
    model = VideoLMM(cfg.model, build_llm(cfg.model.llm, tok), tok).eval()
    fed: list[torch.Tensor | None] = []
    model.compressor.register_forward_pre_hook(lambda _m, args: fed.append(args[1] if len(args) > 1 else None))
    res = evaluate_native(cfg, tmp_path / "run", model=model, progress=False)
    assert res["extra"]["saliency"] == "siglip_map"
    assert fed and all(s is not None and s.shape[1:] == (4, 16) for s in fed[:2])


def _ident(encoder: dict, compressor: dict) -> dict:
    cfg = build(RunConfig, {"model": {"encoder": encoder, "compressor": {"d_in": 32, **compressor}}})
    return run_identity(to_dict(cfg), "synthetic:abc")


def test_only_runs_that_read_the_map_attention_get_a_new_identity():
    """Every run id stays what it was before the attention existed (MambaMia on SigLIP pinned: the id of
    commit 95356da), except a reducer that reads it from a SigLIP with its head (``saliency`` key)."""
    enc = {"name": "siglip", "config": TOWER}
    mm = build(RunConfig, {"model": {"encoder": enc, "compressor": {"name": "mambamia", "d_in": 32}}})
    assert run_id_of(mm, "synthetic:abc") == "0d30559f3adb"
    assert _ident(enc, {"name": "mambamia"})["encoder"] == "siglip/v1"
    assert _ident(enc, {"name": "visionzip"})["saliency"] == "siglip_map/v1"
    assert _ident(enc, {"name": "fastvid"})["saliency"] == "siglip_map/v1"
    for e, c in [(enc, {"name": "divprune"}), (enc, {"name": "visionzip", "saliency": "l2_norm"}),
                 (enc, {"name": "vanilla"}), ({"name": "clip", "config": TOWER}, {"name": "visionzip"}),
                 ({"name": "siglip", "config": {**TOWER, "vision_use_head": False}}, {"name": "visionzip"}),
                 ({"name": "tiny", "dim": 32}, {"name": "visionzip"})]:
        assert "saliency" not in _ident(e, c), (e, c)


def test_the_probe_protocol_feeds_the_map_attention_to_a_reducer(tmp_path: Path):
    make_suite(tmp_path / "suite", SuiteSpec(n_train=4, n_val=0, n_test=4, families=["mark_place"],
                                             frames_dense=16), workers=1, progress=False)

    def cfg(compressor: str) -> RunConfig:
        return build(RunConfig, {
            "data": {"suite": str(tmp_path / "suite"), "cache_dir": str(tmp_path / "cache"), "n_frames": 4},
            "model": {"encoder": {"name": "siglip", "dim": 32, "image_size": 32, "config": TOWER},
                      "compressor": {"name": compressor, "d_in": 32, "ratio": 4 / 64}}})

    vz = load_probe_items(cfg("visionzip"), "test", ["mark_place"])
    assert vz.saliency is not None and vz.saliency.shape == (len(vz.ids), 4, 16)
    assert load_probe_items(cfg("divprune"), "test", ["mark_place"]).saliency is None
    model = ProbeModel(cfg("visionzip"), ["mark_place"]).eval()
    _, out = model.logits_and_output(vz.feats, vz.family_id, vz.saliency)
    assert out.aux["saliency"] == "encoder"
