"""Items and features for the probe protocol: the feature cache's tensors, the family id, the answer index.

The probe scores fixed options, so every family it reads must ask one question with the same options in
the same order on every item (the compress group does; the v1 families name objects in their options and
are refused here, with the family named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.config import RunConfig
from harness.data.features import ensure_features
from harness.model.registry import wants_saliency


@dataclass
class ProbeItems:
    """A split as tensors: feats (n, T, P, D), family ids (n,), answers (n,), and the item ids."""

    ids: list[str]
    families: list[str]  # family of each item
    feats: torch.Tensor
    family_id: torch.Tensor
    answer: torch.Tensor
    failed: dict[str, str]  # item id -> reason, for the items of ``families`` whose video failed
    failed_families: list[str]  # the family of each failed item (scored wrong, never skipped)
    saliency: torch.Tensor | None = None  # (n, T, P): the encoder's attention, when the compressor reads it


def check_fixed_options(items: list[dict[str, Any]], where: str) -> None:
    """Raise ValueError naming the family whose items do not share one question and one option list."""
    seen: dict[str, tuple[str, tuple[str, ...]]] = {}
    for it in items:
        key = (it["question"], tuple(it["options"]))
        first = seen.setdefault(it["family"], key)
        if first != key:
            raise ValueError(
                f"{where}: family {it['family']!r} asks {first[0]!r} with options {list(first[1])} on one item "
                f"and {key[0]!r} with {list(key[1])} on item {it['id']}; the probe protocol scores fixed options, "
                f"so use the compress group (data.synthetic.families) or protocol: lmm")


def load_probe_items(cfg: RunConfig, split: str, families: list[str], progress: bool = False) -> ProbeItems:
    """Items of ``split`` restricted to ``families`` (whose order gives the family ids), with features
    from the cache (computed on first use), and the encoder's ``(n, T, P)`` saliency where the compressor
    reads it and the encoder gives it. Items whose video failed are left out and listed in ``failed``."""
    fs = ensure_features(cfg.data, cfg.model.encoder, [split], progress=progress,
                         saliency=wants_saliency(cfg.model.compressor))
    items = [it for it in fs.split_items(split) if it["family"] in families]
    failed = {i: r for i, r in fs.failed.items() if fs.items.get(i, {}).get("family") in families}
    check_fixed_options(items, f"{cfg.data.suite} ({split})")
    if not items:
        raise ValueError(f"{cfg.data.suite}: no {split} items of families {families}")
    idx = {f: i for i, f in enumerate(families)}
    return ProbeItems(
        ids=[it["id"] for it in items], families=[it["family"] for it in items],
        feats=torch.stack([fs[it["id"]] for it in items]).float(),
        family_id=torch.tensor([idx[it["family"]] for it in items]),
        answer=torch.tensor([int(it["answer_index"]) for it in items]),
        failed=failed, failed_families=[fs.items[i]["family"] for i in failed],
        saliency=(torch.stack([fs.saliency[it["id"]] for it in items]).float()
                  if items and all(it["id"] in fs.saliency for it in items) else None),
    )
