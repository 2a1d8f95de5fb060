"""Word-level tokenizer built locally (no download) for the ``tiny`` LLM preset.

The tiny LLM is randomly initialised, so its tokenizer only has to cover the words of the synthetic
suite and of the prompt template: a whitespace/punctuation split into words, one id per word, the
letters ``A``-``D`` (option letters) and a few special tokens. It is wrapped in
:class:`transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` / ``AutoTokenizer.from_pretrained``
round-trip it through a checkpoint directory like any Hugging Face tokenizer.

Visual tokens never go through the tokenizer: prompts carry the literal placeholder ``<video>`` and
the LMM splices the projected visual tokens there (see :mod:`harness.model.lmm`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
VIDEO_PLACEHOLDER = "<video>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
OPTION_LETTERS = ("A", "B", "C", "D", "E", "F")
#: Words every tiny tokenizer knows, whatever the suite: the prompt template and common glue words.
BASE_WORDS = (
    "Question", "Options", "Answer", "answer", "with", "the", "option", "'", "s", "letter", "from",
    "given", "choices", "directly", "video", "Select", "best", "based", "on", "frames", "of", "a", "an",
    "is", "are", "which", "what", "how", "many", "in", "to", ".", ",", ":", "?", "(", ")", "-", "!",
    *OPTION_LETTERS, *[str(i) for i in range(10)],
)
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """The pre-tokenisation the tiny tokenizer applies: runs of word characters, single punctuation."""
    return _WORD_RE.findall(text)


def build_word_tokenizer(texts: Iterable[str], extra_words: Iterable[str] = (),
                         model_max_length: int = 8192) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer whose vocabulary is the special tokens, :data:`BASE_WORDS`,
    ``extra_words`` and every word of ``texts`` (ids sorted for determinism: the same texts always give
    the same ids). Unknown words map to ``<unk>``."""
    words: set[str] = set(BASE_WORDS)
    words.update(extra_words)
    for t in texts:
        words.update(split_words(t))
    words -= set(SPECIAL_TOKENS)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in sorted(words):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    # keep exactly what split_words() keeps: word runs and single punctuation characters
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_WORD_RE.pattern), behavior="removed", invert=True)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        model_max_length=model_max_length, padding_side="right",
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with ``save_pretrained`` (local path or hub id; never downloads for a
    local directory). Raises FileNotFoundError naming the path if a local directory lacks one."""
    p = Path(path)
    if p.exists() and not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{p}: no tokenizer.json / tokenizer_config.json in this directory")
    return AutoTokenizer.from_pretrained(str(path))
