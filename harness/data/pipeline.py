"""The streaming training input: a torch DataLoader over a manifest, the frozen encoder online.

* :class:`DataOrder` / :class:`SubsetOrder`: the exact item stream (a function of the step, so a
  resumed run sees the same batches); :class:`StepBatchSampler` hands them to a DataLoader, rank by
  rank, from the resume step on (its ``state_dict`` is the step).
* :class:`TrainItems` (a map-style Dataset, run in the workers): a record's conversation becomes a
  :class:`~harness.data.conversation.TokenRow`; its video is decoded with ``read_video`` (only the
  sampled frames, resized for the encoder), or, with the feature cache on, its cached features are
  read. A missing / damaged video or an unusable record is recorded and the next item of a fixed
  probe sequence is taken instead (deterministic: resume stays exact).
* :class:`FeatureSource` (training process): encodes a micro-batch's frames in one batched pass on
  the training device (bf16 on GPU) and fills the optional on-disk cache within its size budget.
* :class:`FailureLog`: per-item failures for the run summary; raises :class:`DataFailureError` once
  the failure rate passes ``data.max_failure_rate``.

Host memory holds the manifest's offset table (memory-mapped) and a few batches in flight, whatever the
dataset's size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.data.cache import FeatureCache, FeatureKey
from harness.data.conversation import BadItem, ConversationEncoder
from harness.data.video import VideoDecodeError, read_video, video_content_hash
from harness.store import atomic_write_text

_PROBE_STRIDE = 7919  # a failed item i is replaced by i + k * stride (mod n), k = 1, 2, ...


class DataFailureError(RuntimeError):
    """Too many training items failed; ``failed`` maps item id -> reason."""

    def __init__(self, message: str, failed: dict[str, str]):
        self.failed = failed
        super().__init__(message)


# ---------------------------------------------------------------------------------------- order
class DataOrder:
    """The deterministic item stream: epoch ``e`` is a permutation of all items seeded by (seed, e).
    Optimizer step ``s`` consumes stream positions ``[s*E, (s+1)*E)`` with E = batch_size * grad_accum *
    world_size; micro-batch ``a`` of rank ``r`` takes its own slice. Resuming at step s gives the same
    batches as an uninterrupted run."""

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, world_size: int = 1):
        if n == 0:
            raise ValueError("no training items (check data.suite / data.families / failed videos)")
        self.n, self.seed, self.bs, self.accum, self.world = n, seed, batch_size, grad_accum, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def batch(self, step: int, micro: int, rank: int) -> list[int]:
        start = ((step * self.accum + micro) * self.world + rank) * self.bs
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.bs)]


class SubsetOrder:
    """A stage's stream over a subset of the items (``train.stages[i].families``): a
    :class:`DataOrder` over ``indices``, counted from the stage's first step and seeded by the stage
    index, so it resumes like the full stream."""

    def __init__(self, indices: Sequence[int], first_step: int, stage: int, seed: int, batch_size: int,
                 grad_accum: int, world_size: int = 1):
        self.indices, self.first_step = np.asarray(indices, dtype=np.int64), first_step
        self.order = DataOrder(len(self.indices), seed + 7919 * stage, batch_size, grad_accum, world_size)

    def batch(self, step: int, micro: int, rank: int) -> list[int]:
        return [int(self.indices[i]) for i in self.order.batch(step - self.first_step, micro, rank)]


class StepBatchSampler:
    """Batch sampler: for steps ``start .. steps-1`` and each of ``grad_accum`` micro-batches, rank
    ``rank``'s item indices from the step's stage order. ``orders[stage_of(step)]``."""

    def __init__(self, orders: Sequence[DataOrder | SubsetOrder], stage_of: Sequence[int], start: int,
                 grad_accum: int, rank: int):
        self.orders, self.stage_of, self.start = orders, list(stage_of), start
        self.accum, self.rank = grad_accum, rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, len(self.stage_of)):
            order = self.orders[self.stage_of[step]]
            for micro in range(self.accum):
                yield order.batch(step, micro, self.rank)

    def __len__(self) -> int:
        return (len(self.stage_of) - self.start) * self.accum

    def state_dict(self) -> dict[str, int]:
        return {"start": self.start}


# ---------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class VideoSpec:
    """How a worker reads a video: frames, sampling, decode size, and the cache key's encoder part
    (``cache_dir`` empty: no cache)."""

    n_frames: int
    sampling: str
    fps: float | None
    size: int
    encoder_id: str = ""
    weights_hash: str = ""
    cache_dir: str = ""


class TrainItems(torch.utils.data.Dataset):
    """Item ``i`` of ``manifest``: ``{index, id, group, row, feats | frames, key, failed}`` where
    ``failed`` lists ``(id, reason)`` of the items tried before it (see the module docstring)."""

    def __init__(self, manifest: Any, conv: ConversationEncoder, video: VideoSpec, retries: int = 8):
        self.manifest, self.conv, self.video, self.retries = manifest, conv, video, retries
        self._cache: Any = None
        self._hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> content hash

    def __len__(self) -> int:
        return len(self.manifest)

    def _cached(self, path: str) -> tuple[torch.Tensor | None, str | None]:
        if not self.video.cache_dir:
            return None, None
        if self._cache is None:
            self._cache = FeatureCache(self.video.cache_dir)
        v = self.video
        st = os.stat(path)
        memo = (path, st.st_size, st.st_mtime_ns)
        vh = self._hashes.get(memo)
        if vh is None:
            vh = video_content_hash(path)
            if len(self._hashes) < 50_000:  # bounded (~15 MB); beyond it, hashed on every read
                self._hashes[memo] = vh
        key = FeatureKey(video_hash=vh, n_frames=v.n_frames, sampling=v.sampling,
                         fps=v.fps if v.sampling == "fps" else None, size=v.size, encoder_id=v.encoder_id,
                         weights_hash=v.weights_hash).digest()
        return self._cache.get(key), key

    def _one(self, j: int) -> dict[str, Any]:
        rec = self.manifest.record(j)
        row = self.conv.encode(rec["conversations"])
        path = rec["video"]
        if not os.path.isfile(path):
            raise VideoDecodeError(path, "missing", "no such file")
        feats, key = self._cached(path)
        frames = None
        if feats is None:
            v = self.video
            frames = read_video(path, v.n_frames, sampling=v.sampling, fps=v.fps, size=v.size)
        return {"index": j, "id": rec["id"], "group": rec["group"], "row": row, "feats": feats,
                "frames": frames, "key": key}

    def __getitem__(self, i: int) -> dict[str, Any]:
        failed: list[tuple[str, str]] = []
        n = len(self.manifest)
        for k in range(self.retries):
            j = (int(i) + k * _PROBE_STRIDE) % n
            try:
                out = self._one(j)
                out["failed"] = failed
                return out
            except (VideoDecodeError, BadItem, OSError, KeyError, ValueError) as e:
                try:
                    rid = self.manifest.record(j).get("id", str(j))
                except Exception:  # noqa: BLE001 - the record itself is unreadable
                    rid = f"#{j}"
                failed.append((str(rid), _reason(e)))
        return {"index": int(i), "id": None, "row": None, "failed": failed}


def _reason(e: Exception) -> str:
    tag = getattr(e, "reason", None) or type(e).__name__
    return f"{tag}: {e}"[:500]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep the usable items (lists, not stacked: cached features and frames may mix) and every
    failure."""
    ok = [it for it in items if it["row"] is not None]
    return {"items": ok, "failed": [f for it in items for f in it["failed"]],
            "attempts": sum(len(it["failed"]) + (it["row"] is not None) for it in items)}


def make_loader(dataset: TrainItems, sampler: StepBatchSampler, workers: int, seed: int,
                prefetch: int = 2) -> torch.utils.data.DataLoader:
    """The DataLoader; its own generator, so the training RNG is not touched (exact resume)."""
    kw: dict[str, Any] = {}
    if workers:
        kw = {"prefetch_factor": prefetch, "persistent_workers": False,
              "multiprocessing_context": "spawn" if torch.cuda.is_initialized() else None}
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed), **kw)


# ---------------------------------------------------------------------------------------- features
class FeatureSource:
    """Encoder features ``(B, T, P, D)`` of a collated micro-batch on ``device``. Frames are encoded
    in one batched pass (bf16 autocast on CUDA when ``bf16``); with ``cache`` the new features are
    stored until ``budget_bytes`` (0: no limit) have been added."""

    def __init__(self, encoder: Any, device: torch.device, bf16: bool, cache: Any = None, budget_bytes: int = 0):
        self.encoder, self.device, self.cache, self.budget = encoder, device, cache, budget_bytes
        self.bf16 = bf16 and device.type == "cuda"
        self.added = self.skipped = self.hits = self.encoded = 0
        self.encode_s = 0.0

    def features(self, items: list[dict[str, Any]]) -> torch.Tensor:
        todo = [k for k, it in enumerate(items) if it["feats"] is None]
        out: list[torch.Tensor | None] = [it["feats"] for it in items]
        self.hits += len(items) - len(todo)
        if todo:
            t0 = time.perf_counter()
            if self.device.type == "cuda":
                frames = torch.cat([items[k]["frames"] for k in todo], 0)
                enc = self.encoder.encode_on_device(frames, torch.bfloat16 if self.bf16 else torch.float32)
                enc = enc.view(len(todo), -1, *enc.shape[1:])
                new = [enc[i] for i in range(len(todo))]
            else:  # the CPU path of the feature cache's filler (identical features)
                new = [self.encoder.encode(items[k]["frames"]) for k in todo]
            self.encode_s += time.perf_counter() - t0
            self.encoded += len(todo)
            for k, f in zip(todo, new):
                out[k] = f
                if self.cache is not None and items[k]["key"] is not None:
                    nbytes = f.numel() * f.element_size()
                    if self.budget and self.added + nbytes > self.budget:
                        self.skipped += 1
                    else:
                        self.cache.put(items[k]["key"], f.cpu())
                        self.added += nbytes
        return torch.stack([f.to(self.device) for f in out])  # type: ignore[union-attr]

    def stats(self) -> dict[str, Any]:
        return {"cache_hits": self.hits, "encoded": self.encoded, "cache_bytes_added": self.added,
                "cache_skipped_budget": self.skipped, "encode_s": round(self.encode_s, 3)}


# ---------------------------------------------------------------------------------------- failures
class FailureLog:
    """Failed items (id -> reason) and attempt counts; :meth:`check` raises past the threshold."""

    def __init__(self, max_rate: float, min_sample: int, state: dict[str, Any] | None = None):
        self.max_rate, self.min_sample = max_rate, min_sample
        self.attempts = int((state or {}).get("attempts", 0))
        self.n_failures = int((state or {}).get("n_failures", 0))
        self.failed: dict[str, str] = dict((state or {}).get("failed", {}))

    def add(self, batch: dict[str, Any]) -> None:
        self.attempts += batch["attempts"]
        self.n_failures += len(batch["failed"])
        for rid, why in batch["failed"]:
            if len(self.failed) < 100_000:
                self.failed.setdefault(rid, why)

    @property
    def rate(self) -> float:
        return self.n_failures / self.attempts if self.attempts else 0.0

    def check(self, where: str) -> None:
        if self.attempts >= self.min_sample and self.rate > self.max_rate:
            listed = "\n".join(f"  {k}: {v}" for k, v in list(self.failed.items())[:20])
            raise DataFailureError(
                f"{where}: {self.n_failures} of {self.attempts} item reads failed ({self.rate:.1%} > "
                f"data.max_failure_rate={self.max_rate:.1%}); first failures:\n{listed}", dict(self.failed))

    def state(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "n_failures": self.n_failures, "failed": dict(self.failed)}

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for why in self.failed.values():
            tag = why.split(":", 1)[0]
            reasons[tag] = reasons.get(tag, 0) + 1
        return {"attempts": self.attempts, "n_failures": self.n_failures, "n_failed_items": len(self.failed),
                "by_reason": reasons, "failed": dict(self.failed)}


def write_failed(path: os.PathLike, failed: dict[str, str]) -> None:
    atomic_write_text(path, "".join(json.dumps({"id": k, "reason": v}) + "\n" for k, v in failed.items()))


__all__ = ["DataOrder", "SubsetOrder", "StepBatchSampler", "TrainItems", "VideoSpec", "collate", "make_loader",
           "FeatureSource", "FailureLog", "DataFailureError", "write_failed"]
