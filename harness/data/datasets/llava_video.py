"""The ``llava_video`` dataset: LLaVA-Video-178K / LLaVA-NeXT conversation records, as a mixture.

A record (JSON array file or JSONL, one per line) is LLaVA's::

    {"id": "...", "video": "relative/path.mp4",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ..."}, {"from": "gpt", "value": "..."}]}

``<image>`` or ``<video>`` marks where the video goes (at most one per record; none: before the first
human turn). Turns alternate human / gpt (an optional leading ``system`` turn); ``video`` is relative to
the entry's ``video_root`` (or absolute). Study config::

    data:
      dataset: llava_video
      args:
        mixture:                      # or a path to LLaVA-NeXT's data YAML ({datasets: [...]})
          - {path: 0_30_s_academic_v0_1_cap.json, video_root: /data/LLaVA-Video-178K, sampling: all}
          - {path: 30_60_s_youtube_v0_1_qa.jsonl, video_root: /data/LLaVA-Video-178K, sampling: "random:25%"}
        seed: 0                       # the random:N% draws

``sampling``: ``all``, ``first:N%``, ``end:N%`` or ``random:N%`` (``:N`` without ``%``: N records),
LLaVA-NeXT's ``sampling_strategy`` (its ``json_path`` is accepted for ``path``, ``video_folder`` for
``video_root``; relative paths in a mixture YAML are relative to the YAML's folder). Turns may also be
``{role: user|assistant|system, content}`` (MambaMia's own JSONL). An entry's ``name``
(default: the file's stem) is its group for ``data.families`` and a stage's ``families``.

The manifest is built once per content (files streamed, never loaded whole: a JSON array is parsed
object by object) into ``<data.manifest_dir>/<identity>/``; malformed records are dropped there and
listed in its ``manifest.json``. The identity hashes the annotation files' bytes, each entry's sampling
and video root, the seed and the filters; video bytes are not read (the feature cache keys on them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from harness.data.datasets.base import DatasetPlugin, FileManifest, Manifest, register_dataset
from harness.schema import ConfigError

if TYPE_CHECKING:
    from harness.config import DataConfig

PLACEHOLDERS = ("<image>", "<video>")
VIDEO = "<video>"
MANIFEST_VERSION = 1
_ENTRY_KEYS = ("path", "json_path", "video_root", "video_folder", "sampling", "sampling_strategy", "name")
_ARG_KEYS = ("mixture", "path", "video_root", "sampling", "seed")
_ROLE_ALIASES = {"user": "human", "assistant": "gpt", "system": "system"}
_MAX_LISTED = 1000  # malformed records listed by location in manifest.json (all are counted)


class DataFormatError(ValueError):
    """A dataset file cannot be read at all (not JSON, not a list of records); names the file."""


# ---------------------------------------------------------------------------------------- config
def parse_sampling(text: str, where: str) -> tuple[str, float, bool]:
    """``all`` | ``first:N%`` | ``first:N`` | ``random:...`` -> (mode, amount, is_percent)."""
    if text == "all":
        return "all", 100.0, True
    mode, _, amount = str(text).partition(":")
    pct = amount.endswith("%")
    try:
        val = float(amount[:-1] if pct else amount)
    except ValueError:
        val = -1.0
    if mode not in ("first", "end", "random") or val <= 0 or (pct and val > 100) or (not pct and val != int(val)):
        raise ConfigError(where, f"sampling must be all, first:N%, end:N%, random:N% (or :N items); got {text!r}")
    return mode, val, pct


def mixture_entries(args: dict[str, Any], where: str = "args", must_exist: bool = True) -> list[dict[str, Any]]:
    """The mixture of ``data.args`` as ``[{path, video_root, sampling, name}]`` (validated; relative
    paths of a mixture YAML are resolved against the YAML's folder). ``must_exist`` false: a mixture
    YAML that does not exist yet gives ``[]`` (config build), else a ConfigError."""
    unknown = sorted(set(args) - set(_ARG_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key; known keys: {', '.join(_ARG_KEYS)}")
    mix = args.get("mixture")
    base = Path(".")
    if mix is None:
        if "path" not in args:
            raise ConfigError(where, "llava_video needs args.mixture (a list or a data YAML) or args.path")
        mix = [{k: args[k] for k in ("path", "video_root", "sampling") if k in args}]
    elif isinstance(mix, str):
        p = Path(mix)
        if not p.is_file():
            if not must_exist:  # a config built before its data exists (login node, dry run): checked later
                return []
            raise ConfigError(f"{where}.mixture", f"{mix}: no such mixture YAML")
        doc = yaml.safe_load(p.read_text()) or {}
        mix = doc.get("datasets") if isinstance(doc, dict) else None
        if not isinstance(mix, list):
            raise ConfigError(f"{where}.mixture", f"{p}: expected a mapping with a `datasets:` list")
        base = p.parent
    if not isinstance(mix, list) or not mix:
        raise ConfigError(f"{where}.mixture", "must be a non-empty list of {path, video_root, sampling}")
    out = []
    for i, e in enumerate(mix):
        w = f"{where}.mixture[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(w, f"expected a mapping, got {type(e).__name__}")
        bad = sorted(set(e) - set(_ENTRY_KEYS))
        if bad:
            raise ConfigError(f"{w}.{bad[0]}", f"unknown key; known keys: {', '.join(_ENTRY_KEYS)}")
        path = e.get("path", e.get("json_path"))
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{w}.path", "a JSON / JSONL file of records is required")
        root = e.get("video_root", e.get("video_folder", ""))
        sampling = str(e.get("sampling", e.get("sampling_strategy", "all")))
        parse_sampling(sampling, f"{w}.sampling")
        p = Path(path) if Path(path).is_absolute() else base / path
        if root and not Path(root).is_absolute() and base != Path("."):
            root = str(base / root)
        out.append({"path": str(p), "video_root": str(root), "sampling": sampling,
                    "name": str(e.get("name") or Path(path).name.split(".")[0])})
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.mixture", f"entry names must differ (set `name:`), got {names}")
    return out


# ---------------------------------------------------------------------------------------- reading
def iter_json_records(path: Path, chunk: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """``(location, object)`` for each record of a JSONL file or a JSON array, streamed (memory holds
    one record and one chunk). A JSONL line that is not JSON yields ``(location, DataFormatError)``; a
    JSON array with a syntax error raises DataFormatError (the rest of the file cannot be located)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    if path.suffix == ".jsonl" or (head[:1] == b"{"):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for ln, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield f"{path.name}:{ln}", json.loads(line)
                    except json.JSONDecodeError as e:
                        yield f"{path.name}:{ln}", DataFormatError(f"not JSON ({e.msg})")
        return
    if head[:1] != b"[":
        raise DataFormatError(f"{path}: expected a JSON array of records or JSONL lines")
    dec = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as fh:
        buf, pos, eof, k, consumed = fh.read(chunk), 0, False, 0, 0
        pos = buf.index("[") + 1
        while True:
            while True:  # skip separators, refilling the buffer as needed
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                consumed += pos
                buf, pos = fh.read(chunk), 0
                eof = not buf
            if pos >= len(buf):
                raise DataFormatError(f"{path}: the JSON array is not closed (file cut?)")
            if buf[pos] == "]":
                return
            try:
                obj, end = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if eof:
                    raise DataFormatError(f"{path}: bad JSON near character {consumed + e.pos} ({e.msg})") from None
                more = fh.read(chunk)
                eof = not more
                consumed += pos
                buf, pos = buf[pos:] + more, 0
                continue
            yield f"{path.name}[{k}]", obj
            k += 1
            pos = end
            if pos > chunk:
                consumed += pos
                buf, pos = buf[pos:], 0


def normalise(raw: Any, root: str) -> tuple[dict[str, Any] | None, str]:
    """A raw record -> ``({id, video, conversations}, "")`` or ``(None, reason)`` when malformed."""
    if not isinstance(raw, dict):
        return None, f"not a mapping ({type(raw).__name__})"
    video = raw.get("video")
    if not isinstance(video, str) or not video.strip():
        return None, "no `video` path" + (" (an image record)" if "image" in raw else "")
    conv = raw.get("conversations")
    if not isinstance(conv, list) or not conv:
        return None, "no `conversations` list"
    turns, n_ph = [], 0
    for j, t in enumerate(conv):
        if isinstance(t, dict) and "role" in t and "from" not in t:  # {role, content} turns
            t = {"from": _ROLE_ALIASES.get(t["role"], t["role"]), "value": t.get("content")}
        if not isinstance(t, dict) or not isinstance(t.get("value"), str) or t.get("from") not in (
                "human", "gpt", "system"):
            return None, f"conversations[{j}]: expected {{from: human|gpt|system, value: str}}"
        if t["from"] == "system" and j:
            return None, f"conversations[{j}]: a system turn must come first"
        value = t["value"]
        n = sum(value.count(p) for p in PLACEHOLDERS)
        if n and t["from"] != "human":
            return None, f"conversations[{j}]: a video placeholder outside a human turn"
        n_ph += n
        for p in PLACEHOLDERS:
            value = value.replace(p, VIDEO)
        turns.append({"from": t["from"], "value": value})
    body = turns[1:] if turns[0]["from"] == "system" else turns
    roles = [t["from"] for t in body]
    if not roles or roles[0] != "human" or any(r != ("human" if k % 2 == 0 else "gpt") for k, r in enumerate(roles)):
        return None, f"turns must alternate human, gpt, ... (got {roles[:6]})"
    if "gpt" not in roles:
        return None, "no gpt turn (nothing to learn)"
    if n_ph > 1:
        return None, f"{n_ph} video placeholders (one video per record)"
    path = video if os.path.isabs(video) or not root else os.path.join(root, video)
    rid = raw.get("id")
    return {"id": str(rid) if rid is not None else "", "video": os.path.abspath(path), "conversations": turns}, ""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- plug-in
class LlavaVideoDataset(DatasetPlugin):
    name = "llava_video"
    default_template = "chat"

    def validate(self, data: DataConfig) -> None:
        # data.synthetic may still describe data.suite (native eval). A mixture YAML not there yet is
        # checked when the manifest is built (a sweep can be planned before the data is in place)
        entries = mixture_entries(data.args, must_exist=False)
        names = {e["name"] for e in entries}
        for i, f in enumerate(data.families if entries else ()):
            if f not in names:
                raise ConfigError(f"families[{i}]", f"unknown mixture entry {f!r}; entries: {', '.join(sorted(names))}")
        seed = data.args.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("args.seed", f"expected an integer, got {seed!r}")

    def identity(self, data: DataConfig, entries: list[dict[str, Any]]) -> str:
        parts = []
        for i, e in enumerate(entries):
            p = Path(e["path"])
            if not p.is_file():
                raise FileNotFoundError(f"data.args.mixture[{i}].path: {p}: no such file")
            parts.append({**e, "path": p.name, "sha256": file_sha256(p)})
        blob = json.dumps({"v": MANIFEST_VERSION, "entries": parts, "seed": data.args.get("seed", 0),
                           "families": sorted(data.families), "max_train_items": data.max_train_items},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def manifest(self, data: DataConfig) -> Manifest:
        try:
            entries = mixture_entries(data.args)
        except ConfigError as e:
            raise FileNotFoundError(f"data.{e.path}: {e.message}") from None
        if data.families:
            entries = [e for e in entries if e["name"] in set(data.families)]
        ident = self.identity(data, entries)
        root = Path(data.manifest_dir) / f"{self.name}-{ident}"
        if not (root / "manifest.json").is_file():
            build_manifest_dir(root, entries, ident, int(data.args.get("seed", 0)), data.max_train_items)
        return FileManifest(root)


def _count(path: Path) -> int:
    return sum(1 for _ in iter_json_records(path))


def _selection(entry: dict[str, Any], i: int, seed: int) -> tuple[set[int] | None, int]:
    """Record indices an entry keeps (None: all) and how many."""
    mode, amount, pct = parse_sampling(entry["sampling"], entry["name"])
    if mode == "all":
        return None, -1
    n = _count(Path(entry["path"]))
    k = min(n, int(round(n * amount / 100)) if pct else int(amount))
    if mode == "first":
        return set(range(k)), k
    if mode == "end":
        return set(range(n - k, n)), k
    rng = np.random.default_rng([seed, i])
    return set(rng.choice(n, size=k, replace=False).tolist()), k


def build_manifest_dir(root: Path, entries: list[dict[str, Any]], identity: str, seed: int,
                       max_items: int = 0) -> None:
    """Stream every entry's file into ``root`` (records.jsonl, offsets.npy, groups.npy, manifest.json);
    written in a temporary folder and renamed into place (a reader never sees a partial manifest)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    offsets, codes = array("q", [0]), array("i")
    malformed: dict[str, str] = {}
    n_malformed, per_entry = 0, []
    try:
        with open(tmp / "records.jsonl", "wb") as out:
            for gi, e in enumerate(entries):
                keep, _ = _selection(e, gi, seed)
                n_read = n_kept = 0
                for j, (loc, raw) in enumerate(iter_json_records(Path(e["path"]))):
                    n_read += 1
                    if keep is not None and j not in keep:
                        continue
                    if max_items and len(codes) >= max_items:
                        break
                    rec, why = (None, str(raw)) if isinstance(raw, Exception) else normalise(raw, e["video_root"])
                    if rec is None:
                        n_malformed += 1
                        if len(malformed) < _MAX_LISTED:
                            malformed[loc] = why
                        continue
                    rec["id"] = rec["id"] or loc
                    rec["group"] = e["name"]
                    line = json.dumps(rec, ensure_ascii=False).encode() + b"\n"
                    out.write(line)
                    offsets.append(offsets[-1] + len(line))
                    codes.append(gi)
                    n_kept += 1
                per_entry.append({"name": e["name"], "path": e["path"], "sampling": e["sampling"],
                                  "n_read": n_read, "n_kept": n_kept})
        np.save(tmp / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
        np.save(tmp / "groups.npy", np.frombuffer(codes, dtype=np.int32))
        n_ok = len(codes)
        stats = {"n_records": n_ok + n_malformed, "n_kept": n_ok, "n_malformed": n_malformed,
                 "malformed": malformed, "entries": per_entry, "sources": [e["path"] for e in entries]}
        meta = {"dataset": "llava_video", "identity": identity, "groups": [e["name"] for e in entries],
                "template": "chat", "version": MANIFEST_VERSION, "stats": stats}
        (tmp / "manifest.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, root)
        except OSError:  # another process built it first: same content
            if not (root / "manifest.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


register_dataset(LlavaVideoDataset())
