"""The ``synthetic`` dataset: the generated multiple-choice suite (:mod:`harness.data.synthetic`) as
single-turn conversations ``human: <prompt>`` / ``gpt: <letter>``.

A thin adapter over the suite's public functions (``load_items``, ``expand_families``, ``spec_from``,
``check_spec``): the families (and groups ``long`` / ``dense``) are its groups; ``data.max_train_items``
takes the first items family by family (every family kept). Its default template is ``plain`` (the
prompt then `` A`` + eos, as the native scorer and the mia lmms-eval tasks read it). The identity hashes
the split's annotation file, the suite's ``meta.json`` and the filters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.datasets.base import DatasetPlugin, ListManifest, Manifest, register_dataset
from harness.data.prompts import format_prompt
from harness.data.synthetic import FAMILIES, GROUPS, balanced_head, check_spec, expand_families, load_items, spec_from
from harness.schema import ConfigError, check_choice

if TYPE_CHECKING:
    from harness.config import DataConfig


class SyntheticDataset(DatasetPlugin):
    name = "synthetic"
    default_template = "plain"

    def validate(self, data: DataConfig) -> None:
        self.check_groups(data.families, "families")
        if data.args:
            raise ConfigError("args", f"the synthetic dataset takes no args, got {sorted(data.args)}")
        if data.synthetic:
            try:
                spec_from(data.synthetic, "synthetic")
            except (ValueError, TypeError) as e:
                key, _, msg = str(e).partition(": ")
                raise ConfigError(key if key.startswith("synthetic") else "synthetic", msg or str(e)) from None

    def check_groups(self, names, where: str) -> None:
        for i, f in enumerate(names):
            check_choice(f"{where}[{i}]", f, (*FAMILIES, *GROUPS))

    def expand_groups(self, names) -> set[str]:
        return expand_families(names)

    def manifest(self, data: DataConfig, split: str = "train") -> Manifest:
        check_spec(data.suite, data.synthetic)
        items = load_items(data.suite, split, list(data.families) or list(FAMILIES))
        if split == "train" and data.max_train_items:
            items = balanced_head(items, data.max_train_items)
        records = [record_of(it, format_prompt(it)) for it in items]
        root = Path(data.suite)
        h = hashlib.sha256()
        for name in (f"{split}.jsonl", "meta.json"):
            p = root / name
            h.update(p.read_bytes() if p.is_file() else b"")
        h.update(json.dumps({"families": sorted(data.families), "max_train_items": data.max_train_items,
                             "split": split}, sort_keys=True).encode())
        stats = {"n_records": len(records), "n_malformed": 0, "malformed": {}, "sources": [str(root)]}
        return ListManifest(records, name=self.name, identity=h.hexdigest()[:16], stats=stats,
                            template="plain")


def record_of(item: dict[str, Any], prompt: str) -> dict[str, Any]:
    """A suite item as a conversation record (the answer letter is the assistant's turn)."""
    return {"id": item["id"], "video": item["video"], "group": item["family"],
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": item["answer"]}]}


register_dataset(SyntheticDataset())
