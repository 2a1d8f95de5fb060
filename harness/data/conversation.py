"""Conversations -> token rows for supervised fine-tuning: loss on the assistant's turns only.

A row is ``before + <visual tokens> + after``: ``before`` the token ids up to the video placeholder,
``after`` the rest, ``labels`` (one per ``after`` id) the id to predict there or :data:`IGNORE`. The
LMM splices the visual embeddings between the two (:meth:`harness.model.lmm.VideoLMM.sft_loss`); the
text is split at the placeholder before tokenising, so the placeholder itself is never a token.

Templates:

* ``chat``: the tokenizer's own chat template (``apply_chat_template``; Qwen2-Instruct's ChatML, or the
  tiny preset's copy of it). Each assistant turn's characters are located by rendering the conversation
  up to that turn (with and without the generation prompt); the tokens that start inside them, the
  turn's end-of-turn marker included, carry the loss. A template whose renderings are not prefixes of
  one another is refused with its name.
* ``plain``: the harness's original format, ``[bos] + human text + " " + answer + eos`` (later human turns
  joined with a newline); the video goes at the placeholder, else first (or, with
  ``model.video_position: before_last_line``, before the instruction line). The synthetic suite uses it.

Truncation (``max_length`` tokens, visual tokens counted at their upper bound) cuts text from the end;
an item whose visual tokens would not fit, or that would keep no assistant token, raises
:class:`BadItem` (``too_long``): it is skipped and counted, never cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE = -100
VIDEO = "<video>"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


class BadItem(ValueError):
    """A training item that cannot be used; ``reason`` is a short tag (``too_long``, ``template``)."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass
class TokenRow:
    """One training sequence around its video: ids ``before`` and ``after`` it, ``labels`` for
    ``after`` (IGNORE where no loss)."""

    before: list[int]
    after: list[int]
    labels: list[int]
    truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_text(self) -> int:
        return len(self.before) + len(self.after)

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def split_context(context: str, video_position: str = "start") -> tuple[str, str]:
    """Text before / after the video for the plain template (the LMM's ``_prompt_parts`` rule)."""
    if VIDEO in context:
        before, after = context.split(VIDEO, 1)
    elif video_position == "before_last_line" and "\n" in context.rstrip("\n"):
        cut = context.rstrip("\n").rindex("\n")
        before, after = context[:cut], context[cut:]
    else:
        before, after = "", context
    return before, after


class ConversationEncoder:
    """Turns a record's ``conversations`` into a :class:`TokenRow` (picklable: runs in DataLoader
    workers). ``n_visual``: the visual tokens one video takes at most; ``max_length`` 0: no limit."""

    def __init__(self, tokenizer: Any, template: str, n_visual: int, max_length: int = 0,
                 video_position: str = "start"):
        if template not in ("plain", "chat"):
            raise ValueError(f"template must be plain or chat, got {template!r}")
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("data.chat_template=chat but the tokenizer has no chat template "
                             "(use plain, or a tokenizer saved with one)")
        self.tok, self.template, self.n_visual = tokenizer, template, n_visual
        self.max_length, self.video_position = max_length, video_position

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] if text else []

    # ------------------------------------------------------------------ templates
    def _plain(self, turns: list[dict[str, str]]) -> TokenRow:
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        body = [t for t in turns if t["from"] != "system"]
        before_txt, after_txt = split_context(body[0]["value"], self.video_position)
        before = bos + self._ids(before_txt)
        after = self._ids(after_txt)
        labels = [IGNORE] * len(after)
        for t in body[1:]:
            if t["from"] == "gpt":
                ids = self._ids(" " + t["value"].strip()) + eos
                after += ids
                labels += ids
            else:
                ids = self._ids("\n" + t["value"].replace(VIDEO, ""))
                after += ids
                labels += [IGNORE] * len(ids)
        return TokenRow(before, after, labels)

    def _render(self, messages: list[dict[str, str]], gen: bool = False) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def _chat(self, turns: list[dict[str, str]]) -> TokenRow:
        msgs = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns]
        if not any(VIDEO in m["content"] for m in msgs):
            first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
            msgs[first] = {**msgs[first], "content": VIDEO + "\n" + msgs[first]["content"]}
        full = self._render(msgs)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            start, upto = self._render(msgs[:i], gen=True), self._render(msgs[: i + 1])
            if not full.startswith(upto) or not upto.startswith(start):
                raise BadItem("template", "the tokenizer's chat template does not render a conversation as "
                                          "a prefix of its continuation; assistant turns cannot be located")
            spans.append((len(start), len(upto)))
        cut = full.index(VIDEO)
        before_txt, after_txt = full[:cut], full[cut + len(VIDEO):]
        before = self._ids(before_txt)
        enc = self.tok(after_txt, add_special_tokens=False, return_offsets_mapping=True)
        after = list(enc["input_ids"])
        base = cut + len(VIDEO)
        labels = []
        for tid, (a, _b) in zip(after, enc["offset_mapping"]):
            pos = base + a
            labels.append(tid if any(s <= pos < e for s, e in spans) else IGNORE)
        if any(s < cut for s, _ in spans):
            raise BadItem("template", "an assistant turn comes before the video")
        return TokenRow(before, after, labels)

    def prompt(self, context: str) -> TokenRow:
        """The row a scorer feeds for one user turn ``context`` (``<video>`` placeholder optional):
        ``before`` / ``after`` ids up to where the answer starts (chat: the generation prompt), as
        training rendered it; ``labels`` all IGNORE. Continuations are appended to ``after``."""
        if self.template == "plain":
            before_txt, after_txt = split_context(context, self.video_position)
            bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
            after = self._ids(after_txt)
            return TokenRow(bos + self._ids(before_txt), after, [IGNORE] * len(after))
        content = context if VIDEO in context else VIDEO + "\n" + context
        full = self._render([{"role": "user", "content": content}], gen=True)
        cut = full.index(VIDEO)
        after = self._ids(full[cut + len(VIDEO):])
        return TokenRow(self._ids(full[:cut]), after, [IGNORE] * len(after))

    # ------------------------------------------------------------------ entry point
    def encode(self, conversations: list[dict[str, str]]) -> TokenRow:
        """Token row of one conversation (truncated to ``max_length``); raises :class:`BadItem`."""
        row = self._chat(conversations) if self.template == "chat" else self._plain(conversations)
        if not self.max_length:
            return row
        room = self.max_length - len(row.before) - self.n_visual
        if room < 0:
            raise BadItem("too_long", f"{len(row.before)} text + {self.n_visual} visual tokens before the "
                                      f"question exceed max_length={self.max_length}: visual tokens would be cut")
        if len(row.after) > room:
            row = TokenRow(row.before, row.after[:room], row.labels[:room], truncated=True)
            if not row.n_targets:
                raise BadItem("too_long", f"no assistant token left within max_length={self.max_length} "
                                          f"({self.n_visual} visual tokens)")
        return row


__all__ = ["ConversationEncoder", "TokenRow", "BadItem", "IGNORE", "split_context"]
