"""Scores and timings shared by both protocols' scorers (the LMM's :mod:`harness.evaluate` and the probe's
:mod:`harness.probe.run`): which families a task list covers, accuracy rows per family, group and overall,
a synchronised median timing, and the kept prefix of a resumed run's ``metrics.jsonl``. Light on purpose:
the probe's jobs import it without transformers (whose import costs each probe worker ~3 s)."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from harness.config import SALIENCY_SOURCES
from harness.data.synthetic import FAMILIES, GROUPS


def task_families(tasks: Sequence[str]) -> list[str]:
    """Families covered by lmms-eval task/group names: ``mia_long`` / ``mia_dense`` (groups),
    ``mia_<family>``, ``mia_all``. Unknown names raise ValueError listing the known ones."""
    fams: list[str] = []
    for t in tasks:
        t = t[: -len("_gen")] if t.endswith("_gen") else t
        name = t[4:] if t.startswith("mia_") else t
        if name == "all":
            new = list(FAMILIES)
        elif name in GROUPS:
            new = GROUPS[name]
        elif name in FAMILIES:
            new = [name]
        else:
            known = ["mia_all"] + [f"mia_{g}" for g in GROUPS] + [f"mia_{f}" for f in FAMILIES]
            raise ValueError(f"eval.tasks: unknown task {t!r}; known: {', '.join(known)}")
        fams += [f for f in new if f not in fams]
    return fams


def accuracy_metrics(correct: dict[str, list[bool]], failed: dict[str, int] | None = None
                     ) -> list[dict[str, Any]]:
    """Per-family results ``{family: [correct?...]}`` -> metric rows per family, group and overall.
    ``failed``: per family, how many of those items are failed videos (scored wrong, counted in ``n``)."""
    failed = failed or {}

    def row(task: str, c: list[bool], n_failed: int, group: str | None) -> dict[str, Any]:
        return {"task": task, "metric": "acc", "value": sum(c) / len(c) if c else float("nan"), "stderr": None,
                "n": len(c), "n_failed": n_failed, "group": group, "higher_is_better": True}

    rows = [row(f"mia_{fam}", correct[fam], failed.get(fam, 0), f"mia_{FAMILIES[fam]}") for fam in sorted(correct)]
    groups: dict[str, list[str]] = defaultdict(list)
    for fam in correct:
        groups[FAMILIES[fam]].append(fam)
    for g in sorted(groups):
        rows.append(row(f"mia_{g}", [x for f in groups[g] for x in correct[f]],
                        sum(failed.get(f, 0) for f in groups[g]), "mia_all"))
    rows.append(row("mia_all", [x for c in correct.values() for x in c], sum(failed.get(f, 0) for f in correct), None))
    return rows


def median_ms(fn: Any, device: torch.device, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after one warm-up (synchronised on a GPU)."""
    cuda = device.type == "cuda"
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        ts.append(1e3 * (time.perf_counter() - t))
    return sorted(ts)[len(ts) // 2]


def metrics_upto(path: Path, step: int) -> list[str]:
    """The lines of a ``metrics.jsonl`` at or before ``step`` (what a run resumed at ``step`` keeps).
    A line that does not parse is the torn tail of a write cut by a kill: it is dropped, with a warning
    naming the file and line, since the steps it logged are trained again."""
    keep = []
    for n, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            print(f"[train] {path}:{n}: dropping a torn metrics line (the run was killed mid-write)",
                  file=sys.stderr)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(ln)
    return keep


def saliency_label(sources: set[str], encoder: str) -> str:
    """A record's ``extra.saliency``: where a training-free reducer's attention-like scores came from, each
    compressor output's ``aux["saliency"]`` (``l2_norm``: the proxy; ``encoder``: the encoder's own attention,
    named here by its source, e.g. ``siglip_map`` for SigLIP's pooling head), joined in sorted order."""
    src = SALIENCY_SOURCES.get(encoder, "encoder")
    return ",".join(sorted(src if s == "encoder" else s for s in sources))
