"""lmms-eval glue for the MambaMia synthetic suite (tasks/mia/*.yaml).

The suite directory is ``$MIA_SUITE_DIR`` (default ``results/data/mia_synthetic``, relative to the
directory lmms-eval is started from). ``data_files_<family>`` attributes are resolved lazily (PEP 562)
when a task YAML asks for them through ``!function utils.data_files_<family>``, so a missing suite fails
only the tasks that need it, with a message saying how to create it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from harness.data.synthetic import FAMILIES, LETTERS, POST_PROMPT, format_prompt

DEFAULT_SUITE_DIR = "results/data/mia_synthetic"


def suite_dir() -> Path:
    return Path(os.environ.get("MIA_SUITE_DIR", DEFAULT_SUITE_DIR)).expanduser().resolve()


def _data_files(family: str) -> dict[str, str]:
    root = suite_dir()
    p = root / "annotations" / family / "test.jsonl"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: missing. The mia_{family} task reads the synthetic suite at {root} "
            f"(set MIA_SUITE_DIR, default {DEFAULT_SUITE_DIR} relative to the working directory); "
            f"create it with `python -m harness.data make-synthetic --out {root}`.")
    return {"test": str(p)}


def __getattr__(name: str) -> Any:  # data_files_<family>
    if name.startswith("data_files_") and name[len("data_files_"):] in FAMILIES:
        return _data_files(name[len("data_files_"):])
    raise AttributeError(name)


def mia_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """[absolute video path] (lmms-eval video models receive paths)."""
    p = Path(doc["video"])
    if not p.is_absolute():
        p = suite_dir() / p
    return [str(p)]


def mia_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return format_prompt(doc, kw.get("pre_prompt", ""), kw.get("post_prompt", POST_PROMPT))


_LETTER = re.compile(r"\b([ABCD])\b")


def parse_letter(text: str) -> str | None:
    """First standalone A-D in a generation ("B", "(C)", "Answer: D." ...), else None."""
    s = text.strip()
    if s[:1] in LETTERS and (len(s) == 1 or not s[1].isalpha()):
        return s[0]
    m = _LETTER.search(s)
    return m.group(1) if m else None


def mia_process_generation(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """generate_until: exact match of the parsed answer letter."""
    pred = parse_letter(results[0] if results else "")
    return {"acc": float(pred == doc["answer"])}


def _loss(r: Any) -> float:
    """One loglikelihood response -> its loss. lmms-eval 0.7.3 stores non-string model outputs as
    ``str(output)`` (api/instance.py ``unwrap_generation_output``), so a ``(loss, is_greedy)`` tuple
    arrives here as the string ``"(0.7, False)"``; both forms are accepted."""
    if isinstance(r, str):  # "(0.7, False)", "(inf, False)" (a failed video): not all literal_eval-able
        r = r.strip().strip("()[]").split(",")[0]
        return float(r)
    if isinstance(r, (tuple, list)):
        r = r[0]
    return float(r)


def mia_process_multiple_choice(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """multiple_choice: ``results[i]`` is the model's response for continuation ``" " + LETTERS[i]``.
    Following lmms-eval's video models (LLaVA & co., and its own multiple_choice scorer, which takes the
    argmin) the first value is a LOSS (negative log-likelihood, lower is better); the prediction is the
    letter with the smallest loss (ties: the first). A non-finite loss (``inf``: the
    plugin could not read the video) scores the doc wrong, never by a tie-break."""
    losses = [_loss(r) for r in results]
    if not all(math.isfinite(x) for x in losses):  # the plugin's mark of a video that could not be read
        return {"acc": 0.0}
    pred = min(range(len(losses)), key=lambda i: losses[i])
    return {"acc": float(pred == int(doc["answer_index"]))}
