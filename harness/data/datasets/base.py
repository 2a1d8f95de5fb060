"""The dataset plug-in contract, the registry and the manifest every run trains from.

A dataset plug-in (``register_dataset``) turns a :class:`~harness.config.DataConfig` into a
:class:`Manifest`: ``n`` training items, each a *record* ``{id, video, conversations, group}`` with
``video`` an absolute path and ``conversations`` LLaVA's ``[{from: human|gpt|system, value}]`` (the video
placeholder ``<video>`` in at most one human turn). ``group`` is what ``data.families`` and a stage's
``families`` select (a synthetic family, a mixture entry's name). The manifest's ``identity`` is a content
hash of what is trained on (annotation bytes, sampling of the mixture, filters), recorded with every run:
:func:`dataset_identity` is the one function the run id can include.

Manifests keep host memory flat: :class:`FileManifest` holds only a memory-mapped offset table into a
normalised JSONL file; a record is read when a DataLoader worker asks for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.schema import ConfigError

if TYPE_CHECKING:  # the run-level config imports this registry; a dataset only reads its DataConfig
    from harness.config import DataConfig

#: Record keys every plug-in yields.
RECORD_KEYS = ("id", "video", "conversations", "group")


class Manifest:
    """The items of one dataset config. Subclasses implement :meth:`record`; ``group_codes`` is an int32
    array (n,) indexing ``groups``; ``stats`` counts what was read and dropped (``malformed``:
    ``{location: reason}``, capped); ``identity`` the content hash."""

    def __init__(self, name: str, identity: str, groups: Sequence[str], group_codes: np.ndarray,
                 stats: dict[str, Any], template: str = "chat"):
        self.name, self.identity, self.groups = name, identity, list(groups)
        self.group_codes, self.stats, self.template = group_codes, stats, template

    def __len__(self) -> int:
        return int(self.group_codes.shape[0])

    def record(self, i: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def indices_of(self, groups: Iterable[str]) -> np.ndarray:
        """Indices (int64, ascending) of the items whose group is one of ``groups``."""
        codes = [self.groups.index(g) for g in groups if g in self.groups]
        return np.nonzero(np.isin(self.group_codes, codes))[0].astype(np.int64)

    def texts(self, limit: int = 20000) -> Iterator[str]:
        """Every turn's text of the first ``limit`` items (a local tokenizer's training corpus)."""
        for i in range(min(limit, len(self))):
            for turn in self.record(i)["conversations"]:
                yield turn["value"]


class ListManifest(Manifest):
    """A manifest held in memory (small datasets: the synthetic suite)."""

    def __init__(self, records: list[dict[str, Any]], **kw: Any):
        groups = sorted({r["group"] for r in records})
        codes = np.array([groups.index(r["group"]) for r in records], dtype=np.int32)
        super().__init__(groups=groups, group_codes=codes, **kw)
        self._records = records

    def record(self, i: int) -> dict[str, Any]:
        return self._records[int(i)]


class FileManifest(Manifest):
    """Records in ``<dir>/records.jsonl`` located by the memory-mapped ``<dir>/offsets.npy`` (n+1 byte
    offsets); ``<dir>/groups.npy`` the group codes; ``<dir>/manifest.json`` identity, groups, stats."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta = json.loads((self.root / "manifest.json").read_text())
        codes = np.load(self.root / "groups.npy", mmap_mode="r")
        super().__init__(name=meta["dataset"], identity=meta["identity"], groups=meta["groups"],
                         group_codes=codes, stats=meta["stats"], template=meta.get("template", "chat"))
        self._offsets = np.load(self.root / "offsets.npy", mmap_mode="r")
        self._fh: Any = None
        self._pid = -1

    def record(self, i: int) -> dict[str, Any]:
        if self._fh is None or self._pid != os.getpid():  # one handle per (worker) process
            self._fh, self._pid = open(self.root / "records.jsonl", "rb"), os.getpid()  # noqa: SIM115 (kept open)
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        self._fh.seek(a)
        return json.loads(self._fh.read(b - a))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the file
        return {**self.__dict__, "_fh": None, "_pid": -1}


class DatasetPlugin:
    """What a dataset provides. ``validate`` raises :class:`ConfigError` (key paths relative to
    ``data``); ``check_groups`` validates a list of group names at ``where``; ``manifest`` builds (or
    reuses) the training manifest; ``select`` expands group names (and aliases) to manifest indices."""

    name = ""
    #: ``data.chat_template: auto`` resolves to this
    default_template = "chat"

    def validate(self, data: DataConfig) -> None:
        self.check_groups(data.families, "families")

    def check_groups(self, names: Sequence[str], where: str) -> None:
        """Group names are known only once the data is read (a mixture's entries): nothing by default."""

    def expand_groups(self, names: Iterable[str]) -> set[str]:
        return set(names)

    def manifest(self, data: DataConfig) -> Manifest:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, manifest: Manifest, names: Sequence[str]) -> np.ndarray:
        return manifest.indices_of(self.expand_groups(names))


DATASETS: dict[str, DatasetPlugin] = {}


def register_dataset(plugin: DatasetPlugin) -> DatasetPlugin:
    """Add ``plugin`` under ``plugin.name`` (a third-party dataset registers itself on import)."""
    if not plugin.name:
        raise ValueError("a dataset plug-in needs a name")
    DATASETS[plugin.name] = plugin
    return plugin


def get_dataset(name: str) -> DatasetPlugin:
    if name not in DATASETS:
        raise ConfigError("data.dataset", f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}")
    return DATASETS[name]


def build_manifest(data: DataConfig) -> Manifest:
    """The training manifest of ``data`` (plug-in ``data.dataset``)."""
    return get_dataset(data.dataset).manifest(data)


def dataset_identity(data: DataConfig) -> str:
    """``<dataset>:<content hash>`` of what ``data`` trains on (reads or builds its manifest)."""
    m = build_manifest(data)
    return f"{m.name}:{m.identity}"


__all__ = ["Manifest", "ListManifest", "FileManifest", "DatasetPlugin", "DATASETS", "register_dataset",
           "get_dataset", "build_manifest", "dataset_identity", "RECORD_KEYS"]
