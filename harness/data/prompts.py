"""The prompt of a multiple-choice item of the synthetic suite: one text for training, native scoring and
the ``mia_*`` lmms-eval tasks (the dataset owns its prompt; training and evaluation both import it here)."""

from __future__ import annotations

from typing import Any

from harness.data import synthetic

PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."


def format_prompt(item: dict[str, Any]) -> str:
    """``<video>`` placeholder, question, lettered options, instruction; the answer follows as " A"."""
    fmt = getattr(synthetic, "format_prompt", None)  # the suite's own formatter, when it has one
    if fmt is not None:
        return fmt(item)
    letters = "ABCDEFGH"
    opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(item["options"]))
    return f"<video>\n{item['question']}\n{opts}\n{PROMPT_SUFFIX}"
