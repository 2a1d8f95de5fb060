"""Items of the synthetic suite with their cached encoder features: what training and native scoring read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.config import RunConfig
from harness.data.features import ensure_features
from harness.data.prompts import format_prompt
from harness.data.synthetic import SPLITS, load_items
from harness.model.registry import wants_saliency


@dataclass
class Example:
    """One training/eval item with its cached features (T, P, D)."""

    id: str
    family: str
    feats: torch.Tensor
    prompt: str
    answer: str  # continuation scored / trained, e.g. " A"
    answer_index: int
    n_options: int
    saliency: torch.Tensor | None = None  # (T, P): the encoder's attention, when the compressor reads it


def load_examples(cfg: RunConfig, split: str, progress: bool = True) -> tuple[list[Example], dict[str, str]]:
    """Items of ``split`` (``data.families`` filter; ``data.max_train_items`` cap on train) with their
    features from the cache (extracted on first use), and the encoder's saliency when the run's compressor
    reads it (:func:`~harness.model.registry.wants_saliency`) and the encoder gives it. Returns the examples
    and ``{item_id: reason}`` for items whose video failed (they are skipped, not fatal)."""
    fs = ensure_features(cfg.data, cfg.model.encoder, [split], progress=progress,
                         saliency=wants_saliency(cfg.model.compressor))
    out = [Example(it["id"], it["family"], fs[it["id"]], format_prompt(it), " " + it["answer"],
                   int(it["answer_index"]), len(it["options"]), fs.saliency.get(it["id"]))
           for it in fs.split_items(split)]
    return out, dict(fs.failed)


def suite_texts(cfg: RunConfig) -> list[str]:
    """Every prompt text of the suite (all splits present): the tiny tokenizer's vocabulary source."""
    texts = []
    for split in SPLITS:
        try:
            items = load_items(cfg.data.suite, split)
        except FileNotFoundError:
            continue
        texts += [format_prompt(it) + " " + it["answer"] for it in items]
    if not texts:
        raise FileNotFoundError(f"data.suite={cfg.data.suite}: no items in any split; run "
                                f"`python -m harness.data make-synthetic --out {cfg.data.suite}`")
    return texts
