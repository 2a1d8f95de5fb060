"""On-disk cache of frozen-encoder features, shared by every compressor variant of a sweep.

A cache entry is one safetensors file ``<root>/<d[:2]>/<d>.safetensors`` holding the tensor ``features``
(float32 ``(T, P, D)``), where ``d`` is the sha256 of a :class:`FeatureKey`: the video's content hash, the
sampling parameters (frame count, mode, fps, decode size) and the encoder's id and weights hash. Nothing
about the compressor is in the key, so every variant of a sweep reuses the same entries.

Concurrency: writes go to a temp file in the same directory, are fsync'ed and then ``os.replace``'d into
place (atomic on POSIX), so readers never see a partial file and two writers of one key are harmless.
:meth:`FeatureCache.get_or_compute` also holds a per-key ``fcntl`` lock so that several processes filling
the same cache do not compute one entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from harness.store import atomic_write_bytes


@dataclass(frozen=True)
class FeatureKey:
    """Everything the features of one video depend on."""

    video_hash: str  # sha256 of the file bytes (harness.data.video.video_content_hash)
    n_frames: int
    sampling: str  # uniform | fps
    fps: float | None  # only for sampling == "fps" (None otherwise)
    size: int | None  # decode resize (square), None: source size
    encoder_id: str
    weights_hash: str

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _digest(key: FeatureKey | str) -> str:
    if isinstance(key, FeatureKey):
        return key.digest()
    if not isinstance(key, str) or len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key must be a FeatureKey or a lowercase hex digest, got {key!r}")
    return key


class FeatureCache:
    """Feature cache rooted at ``root`` (created if missing). ``hits`` / ``misses`` / ``writes`` count
    this object's traffic (``get_or_compute`` counts a computed entry as a miss)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = self.writes = 0
        self._tlock = threading.Lock()

    def path(self, key: FeatureKey | str) -> Path:
        d = _digest(key)
        return self.root / d[:2] / f"{d}.safetensors"

    def __contains__(self, key: FeatureKey | str) -> bool:
        return self.path(key).is_file()

    def get(self, key: FeatureKey | str) -> torch.Tensor | None:
        """The cached tensor, or None (missing or unreadable entry)."""
        p = self.path(key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            self._count("misses")
            return None
        try:
            t = st_load(data)["features"]
        except Exception:  # a foreign / damaged file: treat as a miss, the next put replaces it
            self._count("misses")
            return None
        self._count("hits")
        return t

    def put(self, key: FeatureKey | str, tensor: torch.Tensor, meta: dict[str, str] | None = None) -> Path:
        """Store ``tensor`` atomically (temp file + fsync + rename). Returns the entry's path."""
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        md = {k: str(v) for k, v in (meta or {}).items()}
        if isinstance(key, FeatureKey):
            md.setdefault("key", json.dumps(asdict(key), sort_keys=True))
        blob = st_save({"features": tensor.detach().to("cpu").contiguous()}, metadata=md or None)
        atomic_write_bytes(p, blob)
        self._count("writes")
        return p

    @contextlib.contextmanager
    def lock(self, key: FeatureKey | str) -> Iterator[None]:
        """Exclusive inter-process lock for one key (``fcntl.flock`` on ``<entry>.lock``)."""
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p.with_suffix(".lock"), "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def get_or_compute(self, key: FeatureKey | str, compute: Callable[[], torch.Tensor],
                       meta: dict[str, str] | None = None) -> torch.Tensor:
        """The cached tensor, or ``compute()`` stored under ``key`` (counted as a miss). Exceptions from
        ``compute`` propagate, nothing is stored. :meth:`fetch` also says which it was."""
        return self.fetch(key, compute, meta)[0]

    def fetch(self, key: FeatureKey | str, compute: Callable[[], torch.Tensor],
              meta: dict[str, str] | None = None) -> tuple[torch.Tensor, bool]:
        """``(tensor, hit)``: as :meth:`get_or_compute`, with ``hit`` False when this call computed it.
        (Comparing ``hits`` before and after is wrong when threads share the cache.)"""
        t = self._peek(key)
        if t is not None:
            self._count("hits")
            return t, True
        with self.lock(key):
            t = self._peek(key)  # another process may have filled it while we waited
            if t is not None:
                self._count("hits")
                return t, True
            self._count("misses")
            t = compute()
            self.put(key, t, meta)
            return t, False

    def _peek(self, key: FeatureKey | str) -> torch.Tensor | None:
        try:
            return st_load(self.path(key).read_bytes())["features"]
        except FileNotFoundError:
            return None
        except Exception:
            return None

    def _count(self, name: str) -> None:
        with self._tlock:
            setattr(self, name, getattr(self, name) + 1)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.safetensors"))


__all__ = ["FeatureCache", "FeatureKey"]
