"""Frozen encoders, the on-disk feature cache (atomic, multi-process safe) and ensure_features
(fills once, then serves without decoding; failed videos are recorded, not raised)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError, DataConfig, EncoderConfig, build
from harness.data import features as features_mod
from harness.data.cache import FeatureCache, FeatureKey
from harness.data.encoders import build_encoder
from harness.data.features import ensure_features
from harness.data.synthetic import SuiteSpec, load_items, make_suite
from harness.data.video import read_video

KEY = FeatureKey("ab" * 32, 16, "uniform", None, 64, "tiny-s64-p8-d64", "0123456789abcdef")


# ------------------------------------------------------------------------------------------ encoders
def test_tiny_encoder_shapes_and_determinism():
    frames = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a, b = build_encoder(EncoderConfig()), build_encoder(EncoderConfig())
    fa = a.encode(frames)
    assert fa.dtype == torch.float32 and tuple(fa.shape) == (5, 64, 64)
    assert (a.num_patches, a.dim) == (64, 64)
    assert a.weights_hash == b.weights_hash and torch.equal(fa, b.encode(frames))
    c = build_encoder(EncoderConfig(seed=1))
    assert c.weights_hash != a.weights_hash and not torch.allclose(c.encode(frames), fa)
    assert not any(p.requires_grad for p in a.parameters())
    # "objects" features: dims 0..5 are the saturation-gated hue histogram; a pure red frame fills the
    # red bin in every patch, a grey one leaves the histogram empty (before the position code)
    red = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    red[..., 0] = 255
    hue = (a.encode(red)[0] - a.pos)[:, :6]
    assert (hue.argmax(1) == 0).all() and torch.allclose(hue[:, 0], torch.full((64,), 4.0))
    grey = torch.full((1, 64, 64, 3), 128, dtype=torch.uint8)
    assert torch.allclose((a.encode(grey)[0] - a.pos)[:, :6], torch.zeros(64, 6), atol=1e-6)
    # "pixels" features: mean colour in dims 0..2, a red frame gives (1, -1, -1)
    px = build_encoder(EncoderConfig(config={"features": "pixels"}))
    f = px.encode(red)[0] - px.pos
    assert torch.allclose(f[:, :3], torch.tensor([1.0, -1.0, -1.0]).expand(64, 3), atol=1e-5)
    # other sizes resize; patch grid follows the config
    e = build_encoder(EncoderConfig(image_size=32, patch_size=4, dim=16))
    assert tuple(e.encode(frames).shape) == (5, 64, 16)


@pytest.mark.parametrize("name", ["siglip", "clip"])
def test_hf_encoders_build_from_small_config_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = EncoderConfig(name=name, device="cpu", config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8))
    enc = build_encoder(cfg)
    frames = torch.randint(0, 256, (3, 48, 40, 3), dtype=torch.uint8)
    f = enc.encode(frames)
    assert tuple(f.shape) == (3, 16, 32) and f.dtype == torch.float32  # CLIP's CLS token dropped
    assert (enc.num_patches, enc.dim) == (16, 32) and name in enc.encoder_id
    assert torch.isfinite(f).all()
    again = build_encoder(cfg)
    assert again.weights_hash == enc.weights_hash and torch.allclose(again.encode(frames), f)
    other = build_encoder(EncoderConfig(name=name, device="cpu", seed=5, config=cfg.config))
    assert other.weights_hash != enc.weights_hash


def test_encoder_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.encoder.name|name"):
        build(EncoderConfig, {"name": "dino"})
    with pytest.raises(ValueError, match="model.encoder.config"):
        build_encoder(EncoderConfig(config={"bogus": 1}))
    with pytest.raises(ValueError, match="model.encoder.config"):
        build_encoder(EncoderConfig(name="clip", device="cpu", config={"hiden_size": 8}))
    with pytest.raises(ConfigError, match="sampling"):
        build(DataConfig, {"sampling": "random"})
    with pytest.raises(ConfigError, match=r"families\[0\]"):
        build(DataConfig, {"families": ["colours"]})


# ------------------------------------------------------------------------------------------- cache
def test_put_get_roundtrip_and_layout(tmp_path):
    c = FeatureCache(tmp_path / "c")
    assert c.get(KEY) is None and c.misses == 1
    t = torch.randn(16, 64, 64)
    p = c.put(KEY, t)
    assert p == tmp_path / "c" / KEY.digest()[:2] / f"{KEY.digest()}.safetensors"
    assert torch.equal(c.get(KEY), t) and c.hits == 1 and KEY in c and len(c) == 1
    assert not list(p.parent.glob("*.tmp"))  # no temp files left behind
    assert c.get(KEY.digest()) is not None  # a raw digest works as a key too
    with pytest.raises(ValueError, match="cache key"):
        c.get("not a key!")


def test_key_covers_every_input():
    base = KEY.digest()
    for field, value in [("video_hash", "cd" * 32), ("n_frames", 32), ("sampling", "fps"), ("fps", 2.0),
                         ("size", 224), ("encoder_id", "clip"), ("weights_hash", "f" * 16)]:
        kw = {**KEY.__dict__, field: value}
        assert FeatureKey(**kw).digest() != base, field


def test_damaged_entry_is_a_miss_and_gets_replaced(tmp_path):
    c = FeatureCache(tmp_path)
    p = c.put(KEY, torch.ones(2, 3, 4))
    p.write_bytes(p.read_bytes()[:20])  # as if written by a foreign tool / bad disk
    assert c.get(KEY) is None
    t = c.get_or_compute(KEY, lambda: torch.zeros(2, 3, 4))
    assert torch.equal(t, torch.zeros(2, 3, 4)) and torch.equal(c.get(KEY), t)


def test_compute_error_stores_nothing(tmp_path):
    c = FeatureCache(tmp_path)

    def boom():
        raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        c.get_or_compute(KEY, boom)
    assert KEY not in c


def _worker(root: str, log: str, n_keys: int, seed: int) -> None:
    c = FeatureCache(root)
    order = torch.randperm(n_keys, generator=torch.Generator().manual_seed(seed)).tolist()
    for k in order:
        key = FeatureKey(f"{k:064x}", 8, "uniform", None, 64, "tiny", "h")

        def compute(k=k):
            with open(log, "a") as f:  # O_APPEND: one line per computation
                f.write(f"{k}\n")
            return torch.full((8, 4, 4), float(k))

        t = c.get_or_compute(key, compute)
        assert torch.equal(t, torch.full((8, 4, 4), float(k)))


def test_several_processes_compute_each_entry_once(tmp_path):
    root, log, n = str(tmp_path / "cache"), str(tmp_path / "log.txt"), 24
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(root, log, n, s)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    computed = Path(log).read_text().split()
    assert sorted(map(int, computed)) == list(range(n))  # every key exactly once across 4 processes
    c = FeatureCache(root)
    assert len(c) == n and not list(Path(root).rglob("*.tmp"))


# ----------------------------------------------------------------------------------- ensure_features
@pytest.fixture()
def small_suite(tmp_path) -> Path:
    out = tmp_path / "suite"
    make_suite(out, SuiteSpec(n_train=24, n_val=12, n_test=24, frames_long=16, frames_dense=16, size=32),
               workers=1, progress=False)
    return out


def test_second_run_hits_cache_without_decoding(small_suite, tmp_path, monkeypatch):
    data = DataConfig(suite=str(small_suite), n_frames=8, cache_dir=str(tmp_path / "cache"))
    enc = EncoderConfig()
    calls = {"n": 0}
    real = features_mod.read_video

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(features_mod, "read_video", counting)
    first = ensure_features(data, enc, progress=False)
    n_items = sum(len(load_items(small_suite, s)) for s in ("train", "val", "test"))
    assert len(first) == n_items == calls["n"] and first.stats["computed"] == n_items
    assert not first.failed
    some = next(iter(first))
    assert tuple(first[some].shape) == (8, 64, 64) and first[some].dtype == torch.float32
    # the features are the encoder applied to the sampled frames
    it = first.items[some]
    direct = build_encoder(enc).encode(read_video(it["video"], 8, size=64))
    assert torch.allclose(first[some], direct)

    def no_decoding(*a, **k):
        raise AssertionError("decoded on a warm cache")

    monkeypatch.setattr(features_mod, "read_video", no_decoding)
    second = ensure_features(data, enc, progress=False)  # e.g. the next compressor variant of a sweep
    assert second.stats["hits"] == n_items and second.stats["computed"] == 0
    assert all(torch.equal(first[k], second[k]) for k in first)

    # another frame count is another key: decodes again
    monkeypatch.setattr(features_mod, "read_video", counting)
    calls["n"] = 0
    ensure_features(DataConfig(suite=str(small_suite), n_frames=4, cache_dir=data.cache_dir), enc,
                    splits=("test",), progress=False)
    assert calls["n"] == len(load_items(small_suite, "test"))


def test_failed_videos_are_recorded_and_the_rest_goes_on(small_suite, tmp_path):
    items = load_items(small_suite, "test")
    Path(items[0]["video"]).write_bytes(b"")  # empty
    Path(items[1]["video"]).unlink()  # missing
    v2 = Path(items[2]["video"])
    v2.write_bytes(v2.read_bytes()[: v2.stat().st_size // 3])  # truncated
    data = DataConfig(suite=str(small_suite), n_frames=8, cache_dir=str(tmp_path / "cache"))
    fs = ensure_features(data, EncoderConfig(), splits=("test",), progress=False)
    assert set(fs.failed) == {items[0]["id"], items[1]["id"], items[2]["id"]}
    for it in items[:3]:
        assert it["video"] in fs.failed[it["id"]]  # the reason names the file
    assert len(fs) == len(items) - 3
    assert [i["id"] for i in fs.split_items("test")] == [i["id"] for i in items[3:]]


def test_families_and_train_cap(small_suite, tmp_path):
    data = DataConfig(suite=str(small_suite), n_frames=4, cache_dir=str(tmp_path / "cache"), families=["dense"],
                      max_train_items=6)
    fs = ensure_features(data, EncoderConfig(), progress=False, workers=1)
    fams = [fs.items[i]["family"] for i in fs.splits["train"]]
    assert len(fams) == 6 and set(fams) == {"order", "direction", "location", "colour"}
    assert {fs.items[i]["group"] for i in fs} == {"dense"}
    assert os.path.isdir(data.cache_dir)
