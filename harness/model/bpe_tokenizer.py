"""Byte-level BPE tokenizer trained locally (HF ``tokenizers``), saved with a ChatML chat template.

The tiny LLM preset needs a tokenizer that covers free text (instruction data, real benchmarks' prompts):
the word-level tokenizer of :mod:`harness.model.tokenizer` maps every word it did not see to ``<unk>``. A
byte-level BPE never has an unknown symbol. Its special tokens and template are those of Qwen2-Instruct
(``<|im_start|>`` / ``<|im_end|>``, eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos), so the tiny
preset exercises the same chat-template code path as the paper's Qwen2-7B-Instruct. Nothing is
downloaded: the merges are learnt from the dataset's own texts.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
BPE_SPECIAL_TOKENS = (PAD, IM_START, IM_END)

#: Qwen2-Instruct's chat template (ChatML with a default system turn).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: Text every BPE tokenizer sees besides the dataset (so the template's words are single tokens).
BASE_TEXT = ("system\nYou are a helpful assistant.\nuser\nassistant\n"
             "Answer with the option's letter from the given choices directly. A. B. C. D. E. F. 0123456789")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048,
                        model_max_length: int = 32768) -> PreTrainedTokenizerFast:
    """Learn a byte-level BPE of at most ``vocab_size`` ids (special tokens included) from ``texts``.

    Deterministic: the same texts in the same order give the same vocabulary and merges."""
    if vocab_size < 256 + len(BPE_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(BPE_SPECIAL_TOKENS)} (256 bytes + specials), "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def corpus() -> Iterable[str]:
        yield BASE_TEXT
        yield from texts

    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD,
                                   additional_special_tokens=[IM_START], model_max_length=model_max_length,
                                   padding_side="right")
    fast.chat_template = CHATML_TEMPLATE
    return fast


__all__ = ["train_bpe_tokenizer", "CHATML_TEMPLATE", "BPE_SPECIAL_TOKENS"]
