"""What a training run reads, assembled in the order that fails cheapest first.

1. a pretrained tokenizer (paper LLMs): loaded first, so a missing one fails in seconds;
2. the dataset's manifest (:mod:`harness.data.datasets`), refused when too many records are malformed;
3. a tokenizer built locally when none is given (tiny preset; paper preset with ``random_init`` and
   no tokenizer files): word-level for the synthetic suite, else a byte-level BPE with a chat template;
4. the frozen encoder on the training device, and the conversation encoder (template, max length).

:func:`make_train_loader` then builds the DataLoader (:mod:`harness.data.pipeline`) from the resume step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config import ConfigError, RunConfig
from harness.data.cache import FeatureCache
from harness.data.conversation import ConversationEncoder
from harness.data.datasets import Manifest, get_dataset
from harness.data.encoders import build_encoder
from harness.data.examples import suite_texts
from harness.data.pipeline import (
    DataFailureError,
    FeatureSource,
    StepBatchSampler,
    TrainItems,
    VideoSpec,
    make_loader,
)
from harness.model.bpe_tokenizer import train_bpe_tokenizer
from harness.model.tokenizer import build_word_tokenizer, load_tokenizer


def tokenizer_kind(cfg: RunConfig) -> str:
    """``model.llm.tokenizer_kind`` resolved: ``auto`` is word-level for the synthetic suite (its
    behaviour before BPE existed), byte-level BPE for every other dataset."""
    k = cfg.model.llm.tokenizer_kind
    if k == "auto":
        return "word" if cfg.data.dataset == "synthetic" else "bpe"
    return k


def pretrained_tokenizer(cfg: RunConfig, run_dir: Path) -> Any | None:
    """The tokenizer to load (resume: the run's own copy), or None when it is to be built locally.
    Raises FileNotFoundError / OSError at once when a named one is missing."""
    llm = cfg.model.llm
    saved = run_dir / "model"
    if (saved / "tokenizer.json").is_file() and (llm.preset == "tiny" or not (llm.tokenizer or llm.name_or_path)):
        return load_tokenizer(saved)  # resume: the same vocabulary
    if llm.preset == "tiny":
        return None
    path = llm.tokenizer or llm.name_or_path
    if llm.random_init and not llm.tokenizer:
        local = Path(path) if path else None
        if local is None or (local.is_dir() and not (local / "tokenizer.json").is_file()
                             and not (local / "tokenizer_config.json").is_file()):
            return None  # random weights need no download: a tokenizer is learnt from the data
    if not path:
        raise FileNotFoundError("model.llm.name_or_path / model.llm.tokenizer: the paper preset needs a tokenizer")
    try:
        return load_tokenizer(path)
    except OSError as e:  # not local and not in the hub cache (offline): say which key to fix
        raise FileNotFoundError(f"model.llm.{'tokenizer' if llm.tokenizer else 'name_or_path'}={path}: no "
                                f"tokenizer there ({type(e).__name__}: {str(e)[:200]})") from e


def local_tokenizer(cfg: RunConfig, manifest: Manifest) -> Any:
    """A tokenizer learnt from the dataset's texts (nothing downloaded)."""
    llm = cfg.model.llm
    if tokenizer_kind(cfg) == "word":
        if cfg.data.dataset == "synthetic":
            return build_word_tokenizer(suite_texts(cfg))
        return build_word_tokenizer(manifest.texts())
    vocab = llm.bpe_vocab_size
    if llm.preset != "tiny" and llm.vocab_size:
        vocab = min(vocab, llm.vocab_size)
    return train_bpe_tokenizer(manifest.texts(), vocab, model_max_length=llm.max_position_embeddings)


def check_manifest(cfg: RunConfig, manifest: Manifest) -> None:
    """Stop before any training when too many records are malformed (the list is in the error)."""
    st, d = manifest.stats, cfg.data
    n, bad = int(st.get("n_records", len(manifest))), int(st.get("n_malformed", 0))
    if not len(manifest):
        raise DataFailureError(f"data ({manifest.name}): no usable training record in {st.get('sources')}",
                               dict(st.get("malformed", {})))
    if n and bad / n > d.max_failure_rate:
        listed = "\n".join(f"  {k}: {v}" for k, v in list(st.get("malformed", {}).items())[:20])
        raise DataFailureError(f"data ({manifest.name}): {bad} of {n} records are malformed ({bad / n:.1%} > "
                               f"data.max_failure_rate={d.max_failure_rate:.1%}):\n{listed}",
                               dict(st.get("malformed", {})))


def resolve_template(cfg: RunConfig, tokenizer: Any) -> str:
    """``data.chat_template`` resolved (``plain`` | ``chat``): what training used, so a scorer can
    render prompts the same way (``ConversationEncoder.prompt``)."""
    t = cfg.data.chat_template
    if t == "auto":
        t = get_dataset(cfg.data.dataset).default_template
        if t == "chat" and not getattr(tokenizer, "chat_template", None):
            t = "plain"
    return t


def build_encoder_on(cfg: RunConfig, device: torch.device) -> Any:
    """The frozen encoder, on the training device when ``model.encoder.device`` is ``auto``."""
    enc = cfg.model.encoder
    if enc.device == "auto":
        enc = dataclasses.replace(enc, device=str(device))
    return build_encoder(enc)


def feature_cache_on(cfg: RunConfig) -> bool:
    fc = cfg.data.feature_cache
    return fc == "on" or (fc == "auto" and cfg.data.dataset == "synthetic")


def check_visual_room(cfg: RunConfig, n_visual: int, max_len: int, n_patches: int) -> None:
    """Stop before any training when one video's visual tokens alone reach the row limit: every item
    would be skipped as ``too_long`` and every batch come back empty (issue 30: the uncompressed 64-frame
    arm, 64 x 576 = 36,864 visual tokens, against Qwen2's max_position_embeddings of 32,768)."""
    if max_len and n_visual >= max_len:
        d = cfg.data
        raise ConfigError("data.max_length", f"{n_visual} visual tokens per video (data.n_frames={d.n_frames}, "
                          f"{n_patches} patches per frame, compressor {cfg.model.compressor.name}) "
                          f"leave no room for text within max_length={max_len} "
                          f"({'data.max_length' if d.max_length else 'the LLM config max_position_embeddings'}): "
                          f"every item would be skipped as too long. Use fewer frames, compress, or raise the "
                          f"limit (data.max_length, the LLM config max_position_embeddings)")


@dataclass
class TrainInputs:
    """Everything the loop reads: manifest, encoder, conversation encoder, video spec, cache."""

    manifest: Manifest
    plugin: Any
    encoder: Any
    conv: ConversationEncoder
    video: VideoSpec
    n_visual: int
    cache: Any
    online_bf16: bool


def build_inputs(cfg: RunConfig, manifest: Manifest, tokenizer: Any, model: Any, device: torch.device) -> TrainInputs:
    d = cfg.data
    encoder = build_encoder_on(cfg, device)
    n_visual = model.count_visual_tokens(d.n_frames, encoder.num_patches)
    max_len = d.max_length or int(getattr(model.llm.config, "max_position_embeddings", 0) or 0)
    check_visual_room(cfg, n_visual, max_len, encoder.num_patches)
    conv = ConversationEncoder(tokenizer, resolve_template(cfg, tokenizer), n_visual, max_len,
                               cfg.model.video_position)
    bf16 = cfg.train.bf16 and device.type == "cuda"
    cache = FeatureCache(d.cache_dir) if feature_cache_on(cfg) else None
    video = VideoSpec(n_frames=d.n_frames, sampling=d.sampling, fps=float(d.fps) if d.sampling == "fps" else None,
                      size=encoder.image_size, encoder_id=encoder.encoder_id + ("|bf16" if bf16 else ""),
                      weights_hash=encoder.weights_hash, cache_dir=str(d.cache_dir) if cache is not None else "")
    return TrainInputs(manifest, get_dataset(d.dataset), encoder, conv, video, n_visual, cache, bf16)


def make_train_loader(cfg: RunConfig, inputs: TrainInputs, orders: list, stage_of: list[int], start: int,
                      rank: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader of :mod:`harness.data.pipeline`; ``pin_memory`` (a CUDA run): its pin thread copies
    each batch's frames into page-locked memory, so that :class:`PinnedFeatureSource` moves them to the
    GPU without blocking the host."""
    items = TrainItems(inputs.manifest, inputs.conv, inputs.video)
    sampler = StepBatchSampler(orders, stage_of, start, cfg.train.grad_accum, rank)
    loader = make_loader(items, sampler, cfg.data.workers, cfg.seed)
    if pin_memory and torch.cuda.is_available():
        loader.pin_memory = True  # read when the iterator starts (DataLoader allows setting it after init)
    return loader


def close_loader(batches: Any) -> None:
    """Stop a DataLoader iterator's workers now (a no-op for None or a single-process iterator). An
    error that ends a run otherwise leaves them to interpreter exit, where multiprocessing terminates
    them and the loader's SIGCHLD handler reports "DataLoader worker (pid ...) is killed by signal:
    Terminated" as the last error, hiding the one that stopped the run."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class PinnedFeatureSource(FeatureSource):
    """:class:`~harness.data.pipeline.FeatureSource` whose host tensors reach a GPU without a host
    sync: each item's frames (or cached features) are page-locked (already, when the DataLoader pins)
    and copied with ``non_blocking=True`` before the batched encode. A blocking ``.to(cuda)`` waits for
    the GPU to drain, so the host could not queue the next step while this one runs. CPU: unchanged."""

    def features(self, items: list[dict[str, Any]]) -> torch.Tensor:
        if self.device.type == "cuda":
            for it in items:
                for k in ("frames", "feats"):
                    x = it.get(k)
                    if isinstance(x, torch.Tensor) and not x.is_cuda:
                        it[k] = (x if x.is_pinned() else x.pin_memory()).to(self.device, non_blocking=True)
        return super().features(items)


__all__ = ["TrainInputs", "build_inputs", "make_train_loader", "pretrained_tokenizer", "local_tokenizer",
           "check_manifest", "tokenizer_kind", "feature_cache_on", "resolve_template", "check_visual_room",
           "close_loader", "PinnedFeatureSource"]
