"""Work done once per sweep before any variant runs: the synthetic suite and the feature cache.

Every run of a study that shares a ``(data, encoder)`` config reads the same cached encoder features;
:func:`prepare_data` generates a missing suite (``python -m harness.data make-synthetic`` defaults) and
fills the cache for each distinct pair, so the parallel jobs only read it. On Slurm the same function
runs as one job ahead of the array (:class:`harness.sweep.executors.SlurmExecutor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import DataConfig, EncoderConfig, build
from harness.data.datasets import build_manifest
from harness.data.synthetic import make_suite, spec_from


def data_keys(configs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], list[str]]]:
    """Distinct ``(data, encoder, splits)`` of resolved RunConfig dicts, in first-seen order."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {}
    for c in configs:
        splits = sorted({"train", (c.get("eval") or {}).get("split", "test")})
        k = json.dumps([c["data"], c["model"]["encoder"], splits], sort_keys=True, default=str)
        out.setdefault(k, (c["data"], c["model"]["encoder"], splits))
    return list(out.values())


def _needs_no_suite(c: dict[str, Any]) -> bool:
    """A run that trains on a conversation dataset and scores with lmms-eval never reads data.suite."""
    return (c["data"].get("dataset", "synthetic") != "synthetic"
            and (c.get("eval") or {}).get("backend", "native") != "native")


def make_missing_suites(configs: list[dict[str, Any]], progress: bool = True, log: Any = print) -> list[str]:
    """Generate every ``data.suite`` of resolved RunConfig dicts that does not exist yet (with its
    ``data.synthetic`` spec); returns the folders made. The sweep calls it before planning, since a run
    id includes the suite's content hash."""
    made: list[str] = []
    specs: dict[str, dict[str, Any]] = {}
    for d, _, _ in data_keys(configs):
        over = dict(d.get("synthetic") or {})
        if specs.setdefault(d["suite"], over) != over:
            raise ValueError(f"data.suite {d['suite']}: variants ask for different data.synthetic specs "
                             f"({specs[d['suite']]} vs {over}); give each spec its own data.suite")
    for suite, over in specs.items():
        users = [c for c in configs if c["data"]["suite"] == suite]
        if all(_needs_no_suite(c) for c in users):
            continue
        if not (Path(suite) / "meta.json").is_file():
            log(f"[sweep] data.suite {suite} does not exist: generating the synthetic suite (same as "
                f"`python -m harness.data make-synthetic`{', with ' + str(over) if over else ''})")
            make_suite(suite, spec_from(over), overwrite=Path(suite).exists(), progress=progress)
            made.append(suite)
    return made


def prepare_data(configs: list[dict[str, Any]], progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Generate missing suites and fill the feature cache for every distinct (data, encoder) config.

    Returns ``{"suites_made": [...], "features": [{suite, encoder, n_items, computed, hits, failed, s}]}``.
    Videos that fail to decode are left to the jobs (they record them); nothing here raises for them."""
    from harness.data.features import ensure_features  # lazy: heavy (transformers); the sweep imports this module

    feats: list[dict[str, Any]] = []
    keys = data_keys(configs)
    made = make_missing_suites(configs, progress=progress, log=log)
    # a suite made with other values than data.synthetic is refused by ensure_features (check_spec)
    for data, enc, splits in keys:
        dcfg, ecfg = build(DataConfig, data), build(EncoderConfig, enc)
        if dcfg.dataset != "synthetic":  # conversation data streams through the encoder: build its manifest
            m = build_manifest(dcfg)
            log(f"[sweep] dataset {m.name}:{m.identity}: {len(m)} items, "
                f"{m.stats.get('n_malformed', 0)} malformed records dropped")
            feats.append({"dataset": f"{m.name}:{m.identity}", "n_items": len(m)})
            continue
        fs = ensure_features(dcfg, ecfg, [s for s in splits if s == "train"], progress=progress)
        info = dict(fs.stats)
        # eval splits: every family (tasks may select families beyond data.families)
        ev = [s for s in splits if s != "train"]
        if ev:
            all_fams = build(DataConfig, {**data, "families": []})
            fs2 = ensure_features(all_fams, ecfg, ev, progress=progress)
            for k in ("n_items", "hits", "computed", "failed", "seconds"):
                info[k] = info.get(k, 0) + fs2.stats.get(k, 0)
        feats.append({"suite": data["suite"], "encoder": enc.get("name"), **info})
        log(f"[sweep] features {data['suite']} [{enc.get('name')}, {data['n_frames']} frames]: "
            f"{info.get('n_items')} items, {info.get('computed')} computed, {info.get('hits')} cached, "
            f"{info.get('failed')} failed ({info.get('seconds', 0):.1f} s)")
    return {"suites_made": made, "features": feats}
