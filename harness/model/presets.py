"""Model presets: how the LLM (and its tokenizer) is built, and whole-run presets for the CLI.

* ``tiny``: a transformers Qwen2 (or Llama) config built in code (hidden 64, 2 layers, 4 heads by
  default: :class:`harness.config.LLMConfig`), random init, and a word-level tokenizer built locally
  from the synthetic suite (:mod:`harness.model.tokenizer`). Nothing is downloaded; trains on a CPU.
* ``paper``: a Qwen2-7B / Vicuna-7B class LLM loaded with ``from_pretrained`` from
  ``LLMConfig.name_or_path`` (a local directory or a hub id); with ``random_init`` only the config is
  used (or, with an empty ``name_or_path``, the built-in 7B shape of ``arch``) and weights are random,
  which is enough to measure speed and memory.

``RUN_PRESETS`` are RunConfig override dicts that ``python -m harness.train tiny`` / ``paper`` accept
in place of a YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel, Qwen2Config

from harness.config import LLMConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: 7B shapes of the two LLM families the paper uses (Qwen2-7B; Vicuna-7B = Llama-2-7B shape).
SEVEN_B_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
    "llama": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, tie_word_embeddings=False),
}
_CONFIG_CLASSES = {"qwen2": Qwen2Config, "llama": LlamaConfig}


def tiny_llm_config(cfg: LLMConfig, vocab_size: int, pad_id: int | None = None, bos_id: int | None = None,
                    eos_id: int | None = None) -> PretrainedConfig:
    """A small transformers config from ``cfg``'s sizes (``cfg.vocab_size`` 0: ``vocab_size``)."""
    return _CONFIG_CLASSES[cfg.arch](
        vocab_size=cfg.vocab_size or vocab_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
        initializer_range=cfg.init_std,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
    )


def seven_b_config(arch: str = "qwen2", **overrides: Any) -> PretrainedConfig:
    """The 7B-shaped config of ``arch`` (no download); ``overrides`` replace fields (e.g. fewer layers)."""
    return _CONFIG_CLASSES[arch](**{**SEVEN_B_SHAPES[arch], **overrides})


def build_llm(cfg: LLMConfig, tokenizer: Any | None = None,
              config_override: PretrainedConfig | None = None) -> PreTrainedModel:
    """Build the LLM of ``cfg``.

    tiny: random init from :func:`tiny_llm_config` (needs ``tokenizer`` for the vocabulary size and
    special ids). paper: ``from_pretrained(cfg.name_or_path)`` in ``cfg.dtype``; with ``random_init``,
    random weights from the path's config, or from :func:`seven_b_config` when the path is empty.
    ``config_override`` (a transformers config) wins over both, with random weights.
    """
    dtype = DTYPES[cfg.dtype]
    if config_override is not None:
        config_override._attn_implementation = cfg.attn_implementation
        return AutoModelForCausalLM.from_config(config_override, dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)
    if cfg.preset == "tiny":
        if tokenizer is None:
            raise ValueError("model.llm.preset=tiny needs the tokenizer to size the vocabulary")
        conf = tiny_llm_config(cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                               tokenizer.eos_token_id)
        return AutoModelForCausalLM.from_config(conf, dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)
    if cfg.random_init:
        conf = (AutoConfig.from_pretrained(cfg.name_or_path) if cfg.name_or_path
                else seven_b_config(cfg.arch))
        return AutoModelForCausalLM.from_config(conf, dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)
    local = Path(cfg.name_or_path)
    if local.exists() and not (local / "config.json").exists():
        raise FileNotFoundError(f"model.llm.name_or_path={cfg.name_or_path}: no config.json in this directory")
    return AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=dtype,
                                                attn_implementation=cfg.attn_implementation)


def default_train_modules(cfg: LLMConfig) -> list[str]:
    """Modules trained when ``train.train_modules`` and ``train.stages`` are empty: everything for the
    tiny preset (its LLM is random), compressor + projector for the paper preset (stage 1)."""
    return ["compressor", "projector", "llm"] if cfg.preset == "tiny" else ["compressor", "projector"]


#: Whole-run presets (RunConfig overrides) accepted by ``python -m harness.train <name>``.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {
            "llm": {"preset": "tiny", "arch": "qwen2", "hidden_size": 64, "n_layers": 2, "n_heads": 4,
                    "intermediate_size": 128},
            "compressor": {"block": "bi_ssm", "pooling": "weighted", "spatial": {"period": 16, "n_layers": 2}},
            "projector": "mlp2x_gelu",
        },
        "train": {"steps": 300, "batch_size": 8, "lr": 1e-3, "warmup_steps": 20},
    },
    "paper": {
        "model": {
            "encoder": {"name": "siglip", "name_or_path": "google/siglip2-so400m-patch14-384", "dim": 1152,
                        "image_size": 384, "patch_size": 16},
            "llm": {"preset": "paper", "name_or_path": "Qwen/Qwen2-7B-Instruct", "arch": "qwen2",
                    "hidden_size": 3584, "n_layers": 28, "n_heads": 28, "n_kv_heads": 4,
                    "intermediate_size": 18944, "dtype": "bfloat16", "attn_implementation": "sdpa"},
            "compressor": {"d_in": 1152, "d_model": 1024, "d_out": 1024, "block": "bi_ssm",
                           "pooling": "gpa", "spatial": {"period": 24, "n_layers": 1},
                           "taa": {"enabled": True, "sampling": "delta", "threshold": 0.6, "max_frames": 180}},
            "projector": "mlp2x_gelu",
        },
        "data": {"n_frames": 64, "sampling": "fps", "fps": 2.0, "workers": 8},
        # stage 2 from half the steps: `train.steps=20` shortens both stages (fp32 master weights: the
        # 2e-5 steps of stage 2 reach the bf16 LLM; harness.train.Trainer._master_weights)
        "train": {"steps": 4000, "batch_size": 1, "grad_accum": 16, "lr": 1e-4, "warmup_steps": 100,
                  "bf16": True, "parallel": "fsdp",
                  "stages": [{"start_step": 0, "train_modules": ["compressor", "projector"], "lr": 1e-4},
                             {"start_frac": 0.5, "train_modules": ["compressor", "projector", "llm"],
                              "lr": 2e-5}]},
    },
}
