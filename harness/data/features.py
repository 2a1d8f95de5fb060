"""Fill the feature cache for a suite once, then serve every train / eval job from it.

``ensure_features(data_cfg, enc_cfg)`` decodes each item's video (``DataConfig.n_frames``, ``sampling``,
``fps``; resized to the encoder's ``image_size``), runs the frozen encoder and stores ``(T, P, D)`` float32
features in :class:`~harness.data.cache.FeatureCache` at ``DataConfig.cache_dir``. Items already cached
are loaded without decoding. Items whose video cannot be decoded land in ``FeatureSet.failed`` (id ->
reason naming the file) instead of raising, so an evaluation records them and goes on.

``saliency=True`` also fills ``FeatureSet.saliency`` with the encoder's attention over the patches
(``(T, P)``, :meth:`FrozenEncoder.encode_saliency`; SigLIP's pooling head) where the encoder has one: the
training-free reducers read it, computed in the same forward as the features (:func:`video_inputs`). It is
its own cache entry (:func:`saliency_key`: the feature key with the encoder id suffixed
``#<saliency source>/v<n>``), so feature entries and their digests are unchanged and a features-only entry
is never taken for saliency.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.config import DataConfig, EncoderConfig
from harness.data.cache import FeatureCache, FeatureKey
from harness.data.encoders import FrozenEncoder, build_encoder
from harness.data.synthetic import FAMILIES, balanced_head, check_spec, load_items
from harness.data.video import VideoDecodeError, read_video, video_content_hash
from harness.identity import SALIENCY_VERSIONS


@dataclass
class FeatureSet(Mapping[str, torch.Tensor]):
    """``item_id -> float32 (T, P, D)`` for the items that decoded; ``failed`` holds the others
    (``item_id -> reason``); ``items`` every requested item dict (by id); ``splits`` the ids per split;
    ``stats`` counts and timings of the fill."""

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    saliency: dict[str, torch.Tensor] = field(default_factory=dict)  # item_id -> (T, P), when asked and given
    saliency_source: str | None = None
    encoder_id: str = ""
    weights_hash: str = ""

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.features[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def split_items(self, split: str) -> list[dict[str, Any]]:
        """Items of ``split`` that have features (failed ones left out), in suite order."""
        return [self.items[i] for i in self.splits.get(split, []) if i in self.features]


def feature_key(video: str, data_cfg: DataConfig, encoder: FrozenEncoder) -> FeatureKey:
    """Cache key of one video under ``data_cfg``'s sampling and ``encoder``."""
    return FeatureKey(
        video_hash=video_content_hash(video),
        n_frames=data_cfg.n_frames,
        sampling=data_cfg.sampling,
        fps=float(data_cfg.fps) if data_cfg.sampling == "fps" else None,
        size=encoder.image_size,
        encoder_id=encoder.encoder_id,
        weights_hash=encoder.weights_hash,
    )


def video_features(video: str, data_cfg: DataConfig, encoder: FrozenEncoder, cache: FeatureCache
                   ) -> tuple[torch.Tensor, bool]:
    """``((T, P, D) features, hit)`` of one video through the cache (raises VideoDecodeError)."""
    f, hit, _ = video_inputs(video, data_cfg, encoder, cache)
    return f, hit


def saliency_key(key: FeatureKey, source: str) -> FeatureKey:
    """The cache key of a video's encoder attention: its feature key with the encoder id suffixed
    ``#<source>/v<n>`` (:data:`~harness.identity.SALIENCY_VERSIONS`). Its own entry, so a features-only
    entry is never taken for saliency, a features entry's digest stays as it was, and other weights (the
    key's ``weights_hash`` covers the pooling head) or a bumped source version miss."""
    return dataclasses.replace(key, encoder_id=f"{key.encoder_id}#{source}/v{SALIENCY_VERSIONS.get(source, 0)}")


def video_inputs(video: str, data_cfg: DataConfig, encoder: FrozenEncoder, cache: FeatureCache,
                 saliency: bool = False) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """``((T, P, D) features, hit, (T, P) saliency or None)`` of one video through the cache. The saliency
    only with ``saliency`` and where the encoder has one (:attr:`FrozenEncoder.saliency_source`); a video
    missing from the cache is decoded once and encoded in one forward for both entries (a cached features
    entry without its saliency costs one forward, its features left as cached). Raises VideoDecodeError."""
    key = feature_key(video, data_cfg, encoder)
    meta = {"video": os.path.basename(video)}

    def frames() -> torch.Tensor:
        return read_video(video, data_cfg.n_frames, sampling=data_cfg.sampling,
                          fps=data_cfg.fps if data_cfg.sampling == "fps" else None, size=encoder.image_size)

    source = encoder.saliency_source if saliency else None
    if source is None:
        f, hit = cache.fetch(key, lambda: encoder.encode(frames()), meta)
        return f, hit, None
    fresh: dict[str, torch.Tensor] = {}

    def both() -> torch.Tensor:
        fresh["feats"], sal = encoder.encode_with_saliency(frames())
        return sal

    sal, _ = cache.fetch(saliency_key(key, source), both, {**meta, "saliency": source})
    f, hit = cache.fetch(key, (lambda: fresh["feats"]) if "feats" in fresh else (lambda: encoder.encode(frames())),
                         meta)
    return f, hit, sal


def video_saliency(video: str, data_cfg: DataConfig, encoder: FrozenEncoder, cache: FeatureCache
                   ) -> torch.Tensor | None:
    """The encoder's ``(T, P)`` attention over the patches of one video through the cache, or None when the
    encoder has none (raises VideoDecodeError). See :func:`video_inputs`."""
    return video_inputs(video, data_cfg, encoder, cache, saliency=True)[2]


def ensure_features(data_cfg: DataConfig, enc_cfg: EncoderConfig, splits: Sequence[str] = ("train", "val", "test"),
                    progress: bool = True, workers: int | None = None, encoder: FrozenEncoder | None = None,
                    saliency: bool = False) -> FeatureSet:
    """Features for every item of ``splits`` of ``data_cfg.suite`` (``families`` filter and
    ``max_train_items`` cap applied), computing and caching the missing ones.

    Returns a :class:`FeatureSet` (a ``Mapping[item_id, Tensor (T, P, D)]`` with ``.failed``)."""
    t0 = time.perf_counter()
    check_spec(data_cfg.suite, data_cfg.synthetic)
    fams = list(data_cfg.families) or list(FAMILIES)
    enc = encoder if encoder is not None else build_encoder(enc_cfg)
    cache = FeatureCache(data_cfg.cache_dir)
    fs = FeatureSet(encoder_id=enc.encoder_id, weights_hash=enc.weights_hash,
                    saliency_source=enc.saliency_source if saliency else None)
    todo: list[dict[str, Any]] = []
    for split in splits:
        items = load_items(data_cfg.suite, split, fams)
        if split == "train" and data_cfg.max_train_items:
            items = balanced_head(items, data_cfg.max_train_items)
        fs.splits[split] = [it["id"] for it in items]
        for it in items:
            fs.items[it["id"]] = it
            todo.append(it)

    def one(it: dict[str, Any]) -> tuple[str, torch.Tensor | None, bool, str | None]:
        try:
            t, hit, sal = video_inputs(it["video"], data_cfg, enc, cache, saliency=fs.saliency_source is not None)
            if sal is not None:
                fs.saliency[it["id"]] = sal
            return it["id"], t, hit, None
        except VideoDecodeError as e:
            return it["id"], None, False, str(e)

    n_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    hits = computed = 0
    bar = tqdm(total=len(todo), desc=f"features [{enc.encoder_id}]", disable=not progress, unit="video")
    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as ex:
        for item_id, t, hit, err in ex.map(one, todo):
            if err is not None:
                fs.failed[item_id] = err
            else:
                fs.features[item_id] = t
                hits += hit
                computed += not hit
            bar.update(1)
    bar.close()
    fs.stats = {"n_items": len(todo), "hits": hits, "computed": computed, "failed": len(fs.failed),
                "seconds": round(time.perf_counter() - t0, 3), "cache_dir": str(cache.root)}
    return fs


__all__ = ["FeatureSet", "ensure_features", "feature_key", "saliency_key", "video_features", "video_inputs",
           "video_saliency"]
