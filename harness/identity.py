"""Versioned run identity: what makes two runs "the same experiment", and how old records are read.

A run id is the hash of the run's *resolved* config (every field, defaults spelled out) together with
its :func:`run_identity`: the versions below, the encoder's identity and the dataset's content hash. A
finished record is reused only when its id and its recorded identity both match; any other record of the
same (variant, seed) is *stale*: shown as such by ``--dry-run`` and by the report, rerun with
``python -m harness.sweep STUDY.yaml --rerun-stale``, never silently served.

When to bump what (developers, read this before you merge):

* :data:`BEHAVIOUR_VERSION`: a change alters what a run computes for the *same* config (the training loop,
  the loss, the data order, the model's forward, the scorer, the prompt) -> +1. Every stored result is
  then stale; that is the point.
* :data:`ENCODER_VERSIONS`: the features an encoder computes change (harness/data/encoders.py) -> +1 for
  that encoder (``tests/test_plan.py`` pins the tiny encoder's output and fails until you do).
* :data:`SALIENCY_VERSIONS`: the encoder attention given to the training-free reducers changes
  (``HFVisionEncoder._encode_and_saliency``) -> +1 for that source. Only runs that read it carry the key.
* :data:`SCHEMA_VERSION`: a config field is added or removed, or a default changes -> +1, add a function
  to :data:`MIGRATIONS` that turns a config of the previous version into one that computes what it
  computed then (the old default made explicit), and add the new :func:`defaults_fingerprint` to
  :data:`DEFAULTS_FINGERPRINTS`. ``tests/test_plan.py`` fails until you do.

Stored configs carry their schema: records in ``identity.config_schema``, ``config.json`` files under
:data:`SCHEMA_KEY`; a stored config without one is version 1 (written before this module existed).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config import EncoderConfig, RunConfig, build, config_hash, hashed_view, to_dict
from harness.model.registry import build_config, wants_saliency

# Bump when a change alters what a run computes for the same config (see the module docstring).
BEHAVIOUR_VERSION = 1
# Bump an encoder's number when the features it computes change (see the module docstring).
ENCODER_VERSIONS = {"tiny": 2, "siglip": 1, "clip": 1}
# Bump a source's number when the encoder attention it gives the training-free reducers changes (its own
# identity key, present only in runs whose compressor reads it: see :func:`saliency_identity`).
SALIENCY_VERSIONS = {"siglip_map": 1}
# Bump with a migration when the config's fields or defaults change (see the module docstring).
SCHEMA_VERSION = 3
# schema version -> fingerprint of the resolved default RunConfig under it (the full tree, hashed)
DEFAULTS_FINGERPRINTS = {2: "b135d5893388", 3: "b2b02da0c12d"}
SCHEMA_KEY = "config_schema"


def defaults_fingerprint() -> str:
    """Hash of the resolved default RunConfig: changes with every added field and changed default."""
    return config_hash(RunConfig())


# ------------------------------------------------------------------------------------------ migrations
def _from_1(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (before versioned identity) -> 2. A stored config then spelled out every field of its
    time; the fields added later get the value that reproduces what the run computed:
    ``model.llm.init_std`` 0.02 and tiny ``encoder.config.features: pixels`` when written before both
    existed (commit e8ecd5e), ``compressor.pos_embed: none`` and ``pos_norm: false`` (35705034, 35554979),
    ``model.visual_pos: none`` (921b236f) and ``model.video_position: start`` (7fd74ee)."""
    model = d.get("model")
    if not isinstance(model, dict):
        return d
    comp, llm, enc = model.get("compressor"), model.get("llm"), model.get("encoder")
    before_objects = isinstance(llm, dict) and "init_std" not in llm
    if before_objects:
        llm["init_std"] = 0.02
    if isinstance(enc, dict) and enc.get("name", "tiny") == "tiny":
        extra = enc.setdefault("config", {})
        if isinstance(extra, dict):
            extra.setdefault("features", "pixels" if before_objects else "objects")
    if isinstance(comp, dict):
        comp.setdefault("gpa_gate", True)
        if "pos_embed" not in comp:
            comp["pos_embed"] = "none"
        comp.setdefault("pos_norm", False)
    model.setdefault("visual_pos", "none")
    model.setdefault("video_position", "start")
    return d


def _from_2(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3 (the compressor registry, issue 28): the compressor config names its registry entry
    (``model.compressor.name``; every earlier config was the MambaMia compressor, ``mambamia``), and the
    model has a token budget (``model.visual_tokens`` 0: none; ``model.budget_by: period``), and a run may be
    evaluation-only (``eval.parent``, empty: it trains)."""
    model = d.get("model")
    if not isinstance(model, dict):
        return d
    comp = model.get("compressor")
    if isinstance(comp, dict):
        comp.setdefault("name", "mambamia")
    model.setdefault("visual_tokens", 0)
    model.setdefault("budget_by", "period")
    ev = d.get("eval")
    if isinstance(ev, dict):
        ev.setdefault("parent", "")
    return d


# version v -> the function that turns a version-v config dict into a version v+1 one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_1, 2: _from_2}


def migrate_config(d: dict[str, Any], version: int | None) -> dict[str, Any]:
    """A stored config dict of schema ``version`` (None: 1) as a current one (a new dict)."""
    v = 1 if version is None else int(version)
    if v > SCHEMA_VERSION:
        raise ValueError(f"config schema {v} is newer than this code's {SCHEMA_VERSION}: update the harness")
    out = copy.deepcopy(d)
    while v < SCHEMA_VERSION:
        out = MIGRATIONS[v](out)
        v += 1
    return out


def stamp(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict as it is written to ``config.json`` (with its schema version)."""
    return {**config, SCHEMA_KEY: SCHEMA_VERSION}


def read_config_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A config dict read from a ``config.json`` (:func:`stamp`'s output, or an older unstamped one) ->
    a current config dict, migrated."""
    doc = dict(doc)
    version = doc.pop(SCHEMA_KEY, None)
    return migrate_config(doc, version)


def record_config(record: dict[str, Any]) -> dict[str, Any]:
    """The config of a results-store record, migrated to the current schema."""
    ident = record.get("identity") or {}
    return migrate_config(record.get("config") or {}, ident.get(SCHEMA_KEY))


# -------------------------------------------------------------------------------------------- identity
def encoder_identity(enc: dict[str, Any]) -> str:
    """What an encoder is beyond its config fields: its code version and, for a local pretrained
    directory, a hash of its config.json and weight file sizes (a swapped checkpoint changes it)."""
    name = str(enc.get("name", "tiny"))
    out = f"{name}/v{ENCODER_VERSIONS.get(name, 0)}"
    path = str(enc.get("name_or_path") or "")
    if not path:
        return out
    p = Path(path)
    if not p.is_dir():
        return f"{out}:hub:{path}@{(enc.get('config') or {}).get('revision', 'main')}"
    return f"{out}:dir:{_dir_hash(str(p.resolve()), *_dir_stamp(p))}"


def _dir_stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_mtime_ns, st.st_ino


@functools.lru_cache(maxsize=64)
def _dir_hash(path: str, _mtime: int, _ino: int) -> str:
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(root.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


# Keys of a synthetic suite's meta.json that describe one generation, not the content.
_VOLATILE_META = ("seconds", "workers")


def suite_manifest_hash(suite_dir: str | os.PathLike) -> str | None:
    """Content hash of a synthetic suite's manifest: ``meta.json`` (less its timing keys) and the item
    lists ``{train,val,test}.jsonl`` (ids, videos, questions, answers, events). None if the suite does not
    exist. Cached per (path, file sizes and times), so a plan hashes each suite once."""
    root = Path(suite_dir)
    files = [root / "meta.json", *(root / f"{s}.jsonl" for s in ("train", "val", "test"))]
    try:
        stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else (-1, -1) for f in files)
    except OSError:
        return None
    if stamps[0][0] < 0:
        return None
    return _manifest_hash(str(root.resolve()), stamps)


@functools.lru_cache(maxsize=64)
def _manifest_hash(root: str, _stamps: tuple[tuple[int, int], ...]) -> str:
    r = Path(root)
    meta = json.loads((r / "meta.json").read_text())
    for k in _VOLATILE_META:
        meta.pop(k, None)
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for s in ("train", "val", "test"):
        p = r / f"{s}.jsonl"
        h.update(f"\n{s}\n".encode())
        if p.is_file():
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def current_versions(encoder: str = "tiny") -> dict[str, Any]:
    """The code-side part of an identity (no dataset): what :func:`code_stale_reason` checks."""
    return {SCHEMA_KEY: SCHEMA_VERSION, "behaviour": BEHAVIOUR_VERSION,
            "encoder": f"{encoder}/v{ENCODER_VERSIONS.get(encoder, 0)}"}


def saliency_identity(resolved: dict[str, Any]) -> str | None:
    """``<source>/v<n>`` when the run's compressor reads the encoder's attention (a training-free reducer
    with ``saliency: auto``, :func:`~harness.model.registry.wants_saliency`) and its encoder config gives
    one (:attr:`EncoderConfig.saliency_source`: SigLIP with its pooling head); else None, and the run's
    identity has no such key, so every other run id is what it was before the attention existed."""
    model = resolved.get("model") or {}
    source = build(EncoderConfig, dict(model.get("encoder") or {})).saliency_source
    if source is None:
        return None
    if not wants_saliency(build_config(dict(model.get("compressor") or {}))):
        return None
    return f"{source}/v{SALIENCY_VERSIONS.get(source, 0)}"


def run_identity(resolved: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The versions and content hashes that, with the resolved config, make up a run id (``saliency``
    only where the run reads the encoder's attention: :func:`saliency_identity`)."""
    ident = {SCHEMA_KEY: SCHEMA_VERSION, "behaviour": BEHAVIOUR_VERSION,
             "encoder": encoder_identity(resolved["model"]["encoder"]), "dataset": dataset}
    sal = saliency_identity(resolved)
    if sal is not None:
        ident["saliency"] = sal
    return ident


def run_id(resolved: dict[str, Any], identity: dict[str, Any], n: int = 12) -> str:
    """The run id: hash of canonical JSON of the resolved config and its identity (the config without
    :data:`harness.config.UNHASHED_FIELDS`: where a run reports, not what it computes)."""
    blob = json.dumps({"config": hashed_view(resolved), "identity": identity}, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def run_id_of(cfg: RunConfig, dataset: str) -> str:
    """:func:`run_id` of a built config."""
    resolved = to_dict(cfg)
    return run_id(resolved, run_identity(resolved, dataset))


# ----------------------------------------------------------------------------------------- staleness
def code_stale_reason(record: dict[str, Any]) -> str | None:
    """Why a record is stale judged by this code's versions alone (no data read): no identity, or a
    schema / behaviour / encoder version other than the current one. None: current as far as known."""
    ident = record.get("identity")
    if not isinstance(ident, dict):
        return "recorded before versioned run identity (no identity in the record)"
    parts = []
    if ident.get("behaviour") != BEHAVIOUR_VERSION:
        parts.append(f"behaviour version {ident.get('behaviour')} -> {BEHAVIOUR_VERSION}")
    if ident.get(SCHEMA_KEY) != SCHEMA_VERSION:
        parts.append(f"config schema {ident.get(SCHEMA_KEY)} -> {SCHEMA_VERSION}")
    enc = str(ident.get("encoder") or "")
    name, _, rest = enc.partition("/v")
    cur = ENCODER_VERSIONS.get(name)
    if cur is not None and rest.split(":", 1)[0] != str(cur):
        parts.append(f"encoder {enc.split(':', 1)[0]} -> {name}/v{cur}")
    sal = str(ident.get("saliency") or "")
    src, _, ver = sal.partition("/v")
    if sal and SALIENCY_VERSIONS.get(src) is not None and ver != str(SALIENCY_VERSIONS[src]):
        parts.append(f"saliency {sal} -> {src}/v{SALIENCY_VERSIONS[src]}")
    return "; ".join(parts) or None


def stale_reason(record: dict[str, Any], identity: dict[str, Any], resolved: dict[str, Any]) -> str:
    """What differs between a stored record and the run planned now (identity fields, then config keys)."""
    old = record.get("identity")
    if not isinstance(old, dict):
        return "recorded before versioned run identity (no identity in the record)"
    parts = [f"{k} {old.get(k)} -> {identity.get(k)}" for k in sorted(identity) if old.get(k) != identity.get(k)]
    diff = _diff_paths(hashed_view(record_config(record)), hashed_view(resolved))
    if diff:
        parts.append("config " + ", ".join(diff[:3]) + (f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""))
    return "; ".join(parts) or "recorded under another run id"


def _diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            if k == "seed" and not prefix:
                continue
            out += _diff_paths(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if a != b:
        return [f"{prefix[:-1]}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}"]
    return []
