"""The run-level config: every job in the harness (train, eval, sweep) is described by a :class:`RunConfig`,
a tree of plain dataclasses built strictly by :func:`harness.schema.build` (unknown keys with a "did you
mean", wrong types, values a ``__post_init__`` refuses, each named by its full key path).

The parts own their configs: the compressor's (``model.compressor``) is whatever registry entry its
``name`` picks (:mod:`harness.model.registry`; MambaMia's in :mod:`harness.model.mambamia_config`), and
each dataset validates its own keys (:mod:`harness.data.datasets`). This module sits above both and
imports them; neither imports it. ``model.visual_tokens`` is the token budget of a matched-budget study:
the compressor config is changed to meet it exactly (:meth:`RunConfig.__post_init__`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.data.datasets import DATASETS, get_dataset
from harness.model.registry import CompressorConfigBase, build_config, default_config
from harness.schema import (  # noqa: F401  (re-exported: the builder is used with the run config everywhere)
    UNHASHED_FIELDS,
    ConfigError,
    build,
    check_choice,
    config_hash,
    deep_merge,
    hash_view,
    hashed_view,
    set_by_path,
    to_dict,
)
from harness.trackers import TRACKERS

#: encoder name -> the name of its own attention over the patches (SigLIP's multihead-attention pooling head)
SALIENCY_SOURCES = {"siglip": "siglip_map"}


@dataclass
class EncoderConfig:
    """Frozen vision encoder. ``tiny``: built-in deterministic patch features (offline default; uses
    ``image_size``, ``patch_size``, ``dim``, ``seed``; ``config`` may hold ``pos_scale``);
    ``siglip`` / ``clip``: transformers models loaded from ``name_or_path`` (``config``: extra
    from_pretrained kwargs) or, with ``name_or_path`` empty, built with random weights from ``config``
    (vision-config kwargs); sizes then come from the model config. See harness/data/encoders.py."""

    name: str = "tiny"  # tiny | siglip | clip
    name_or_path: str = ""
    image_size: int = 64
    patch_size: int = 8
    dim: int = 64
    config: dict[str, Any] = field(default_factory=dict)
    feature_layer: int = -2  # siglip / clip: which hidden state (LLaVA: -2)
    seed: int = 0  # tiny projection / random-init weights
    batch_size: int = 64  # frames per encoder forward
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    @property
    def patches_per_frame(self) -> int:
        """P, the tokens per frame: (image_size // patch_size)^2, from ``config`` where a random-init tower
        takes its sizes from there (set both fields to a pretrained tower's own sizes)."""
        size = self.config.get("image_size", self.image_size) if self.name != "tiny" else self.image_size
        patch = self.config.get("patch_size", self.patch_size) if self.name != "tiny" else self.patch_size
        return (int(size) // int(patch)) ** 2

    @property
    def saliency_source(self) -> str | None:
        """The encoder's own attention over the patches that training-free reducers read, as the config
        says it (no weights loaded): ``siglip_map`` for SigLIP unless ``config`` turns its pooling head off
        (``vision_use_head: false``); None for CLIP and the tiny encoder. The built encoder's
        ``FrozenEncoder.saliency_source`` is the fact (a pretrained tower without a head gives None)."""
        src = SALIENCY_SOURCES.get(self.name)
        return None if src is None or self.config.get("vision_use_head", True) is False else src

    def __post_init__(self) -> None:
        check_choice("name", self.name, ("tiny", "siglip", "clip"))
        for name in ("image_size", "patch_size", "dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass
class LLMConfig:
    """The language model. ``preset: tiny`` builds a small transformers config (``arch``, sizes below)
    with random init and a word-level tokenizer built locally from the suite; ``paper`` loads
    ``name_or_path`` (a local directory or hub id) with from_pretrained, or, with ``random_init``, only
    its config (or the 7B shape of ``arch`` when ``name_or_path`` is empty) with random weights."""

    preset: str = "tiny"  # tiny | paper
    name_or_path: str = ""
    tokenizer: str = ""  # paper: tokenizer path (default: name_or_path)
    arch: str = "qwen2"  # qwen2 | llama
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0  # 0: n_heads
    intermediate_size: int = 128
    vocab_size: int = 0  # 0: the tokenizer's size
    max_position_embeddings: int = 8192
    # tiny: std of the random init (transformers' initializer_range). Its default, 0.02, suits widths of
    # ~1-4K; at width 64 attention stays uniform and the answer blind to the video for hundreds of steps
    # (measured: 0.02 -> colour learned after ~150 steps x 16; 0.1 -> after ~40).
    init_std: float = 0.1
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    random_init: bool = False  # paper preset: random weights (speed/memory benchmarks, no download)
    # tiny (and paper with random_init and no tokenizer files): the tokenizer built locally. auto: word
    # level for the synthetic suite (its old behaviour), byte-level BPE (+ chat template) otherwise
    tokenizer_kind: str = "auto"  # auto | word | bpe
    bpe_vocab_size: int = 2048

    def __post_init__(self) -> None:
        check_choice("preset", self.preset, ("tiny", "paper"))
        check_choice("arch", self.arch, ("qwen2", "llama"))
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_choice("attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))
        check_choice("tokenizer_kind", self.tokenizer_kind, ("auto", "word", "bpe"))
        if self.bpe_vocab_size < 259:
            raise ConfigError("bpe_vocab_size", f"must be >= 259 (256 bytes + 3 specials), got {self.bpe_vocab_size}")
        for name in ("hidden_size", "n_layers", "n_heads", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.init_std <= 0:
            raise ConfigError("init_std", f"must be > 0, got {self.init_std}")
        if self.hidden_size % self.n_heads:
            raise ConfigError("n_heads", f"hidden_size={self.hidden_size} is not divisible by "
                              f"n_heads={self.n_heads}")
        if self.n_kv_heads < 0 or (self.n_kv_heads and self.n_heads % self.n_kv_heads):
            raise ConfigError("n_kv_heads",
                              f"must be 0 or divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        if self.preset == "paper" and not self.name_or_path and not self.random_init:
            raise ConfigError("name_or_path", "the paper preset loads weights: set name_or_path "
                              "(local dir or hub id), or random_init: true")


PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    compressor: CompressorConfigBase = field(default_factory=default_config)  # any registry entry (``name``)
    llm: LLMConfig = field(default_factory=LLMConfig)
    projector: str = "mlp2x_gelu"  # linear | mlp2x_gelu
    # where the visual tokens go when the prompt has no <video> placeholder: "start" (LLaVA style,
    # before the text) or "before_last_line" (after the question and options, before the instruction)
    video_position: str = "start"
    # learned absolute time/slot embeddings added to the visual tokens (harness.model.projector)
    visual_pos: str = "time_slot"  # time_slot | none
    # LLM visual tokens per video the compressor must pass (0: whatever it passes). A matched-budget study
    # sweeps it: each compressor config is changed to meet it exactly (RunConfig.__post_init__), a trained
    # compressor by its spatial period (``budget_by: period``) or a uniform cut (``cut``), a training-free
    # reducer by its own ratio; one that cannot is a ConfigError naming why.
    visual_tokens: int = 0
    budget_by: str = "period"  # period | cut

    def __post_init__(self) -> None:
        check_choice("budget_by", self.budget_by, ("period", "cut"))
        if self.visual_tokens < 0:
            raise ConfigError("visual_tokens", f"must be > 0 (a budget) or 0 (none), got {self.visual_tokens}")
        check_choice("projector", self.projector, PROJECTOR_TYPES)
        check_choice("visual_pos", self.visual_pos, ("none", "time_slot"))
        check_choice("video_position", self.video_position, ("start", "before_last_line"))


@dataclass
class DataConfig:
    """What a run trains on and how its videos become encoder input (see docs/data.md).

    ``dataset`` names a plug-in of :mod:`harness.data.datasets` (``synthetic``: the suite at ``suite``;
    ``llava_video``: LLaVA-Video-178K / LLaVA-NeXT conversation records, a mixture in ``args``); each
    dataset validates its own keys (``families``, ``synthetic``, ``args``). Frames: ``n_frames`` per
    video (a cap under ``fps`` sampling), ``uniform`` or ``fps`` sampling, resized for the encoder.
    ``feature_cache``: ``auto`` (on for ``synthetic``, off otherwise: the encoder then runs online on the
    training device), ``on`` / ``off``; ``cache_budget_gb`` caps what a run adds to ``cache_dir``.
    ``chat_template``: ``auto`` (``plain`` for ``synthetic``, whose native scorer reads plain prompts;
    the tokenizer's own chat template for conversation datasets), ``plain`` or ``chat``.
    ``max_length`` (0: the LLM's ``max_position_embeddings``) truncates text, never visual tokens: an
    item whose visual tokens would not fit is skipped. Items that fail (missing / damaged video,
    malformed record, too long) are skipped and counted; a failure rate above ``max_failure_rate`` (over
    at least ``min_failure_sample`` attempts) stops the run with the list."""

    dataset: str = "synthetic"
    suite: str = "results/data/mia_synthetic"
    families: list[str] = field(default_factory=list)  # empty: all; names or groups ("long", a source name)
    args: dict[str, Any] = field(default_factory=dict)  # dataset-specific (llava_video: mixture, ...)
    n_frames: int = 16
    sampling: str = "uniform"  # uniform | fps
    fps: float = 1.0  # sampling: fps only
    cache_dir: str = "results/cache/features"
    manifest_dir: str = "results/cache/manifests"
    max_train_items: int = 0  # 0: all
    # SuiteSpec fields ({clutter: 0, noise: 0}) for a suite the sweep generates when data.suite is missing;
    # an existing suite must have been made with them. Empty: the defaults of `make-synthetic`.
    synthetic: dict[str, Any] = field(default_factory=dict)
    chat_template: str = "auto"  # auto | plain | chat
    max_length: int = 0  # 0: the LLM's max_position_embeddings
    workers: int = 0  # DataLoader worker processes (0: decode in the training process)
    feature_cache: str = "auto"  # auto | on | off
    cache_budget_gb: float = 0.0  # 0: no limit
    max_failure_rate: float = 0.05
    min_failure_sample: int = 50

    def __post_init__(self) -> None:
        check_choice("sampling", self.sampling, ("uniform", "fps"))
        check_choice("chat_template", self.chat_template, ("auto", "plain", "chat"))
        check_choice("feature_cache", self.feature_cache, ("auto", "on", "off"))
        if not 1 <= self.n_frames <= 4096:
            raise ConfigError("n_frames", f"must be in [1, 4096], got {self.n_frames}")
        if self.fps <= 0:
            raise ConfigError("fps", f"must be > 0, got {self.fps}")
        for name in ("max_train_items", "max_length", "workers", "min_failure_sample"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.cache_budget_gb < 0:
            raise ConfigError("cache_budget_gb", f"must be >= 0 (0 = no limit), got {self.cache_budget_gb}")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError("max_failure_rate", f"must be in [0, 1], got {self.max_failure_rate}")
        check_choice("dataset", self.dataset, list(DATASETS))
        get_dataset(self.dataset).validate(self)  # dataset-specific keys: raises ConfigError


TRAIN_MODULES = ("compressor", "projector", "llm")


@dataclass
class TrainStage:
    """One training stage: from optimizer step ``start_step`` (inclusive) to the next stage's start (or
    ``train.steps``), only ``train_modules`` get gradients; each stage has its own AdamW, warm-up and
    cosine decay. ``lr`` 0 and ``warmup_steps`` -1 inherit ``train.lr`` / ``train.warmup_steps``.
    ``families`` (names or groups, a subset of ``data.families``) restricts the stage's training items,
    as LLaVA-style recipes change data between stages; empty: all of the run's training items.
    ``start_frac`` (>= 0) places the start at ``ceil(start_frac * train.steps)`` instead."""

    start_step: int = 0
    train_modules: list[str] = field(default_factory=lambda: ["compressor", "projector"])
    lr: float = 0.0
    warmup_steps: int = -1
    families: list[str] = field(default_factory=list)
    # >= 0: start at this fraction of train.steps (replaces start_step), so that shortening a run with
    # train.steps=... keeps the stages' proportions
    start_frac: float = -1.0

    def __post_init__(self) -> None:
        if self.start_step < 0:
            raise ConfigError("start_step", f"must be >= 0, got {self.start_step}")
        if not self.train_modules:
            raise ConfigError("train_modules", f"must name at least one of {TRAIN_MODULES}")
        for i, m in enumerate(self.train_modules):
            check_choice(f"train_modules[{i}]", m, TRAIN_MODULES)
        if self.lr < 0:
            raise ConfigError("lr", f"must be >= 0 (0 = train.lr), got {self.lr}")
        if self.start_frac != -1.0 and not 0 <= self.start_frac < 1:
            raise ConfigError("start_frac", f"must be in [0, 1) (or -1: use start_step), got {self.start_frac}")
        # ``families`` names the dataset's groups: checked by the dataset in RunConfig.__post_init__


@dataclass
class TrainConfig:
    """Optimisation of one run. ``batch_size`` is per process and micro-step; one optimizer step sees
    ``batch_size * grad_accum * world_size`` items. ``train_modules`` empty means the preset's choice
    (tiny: everything, since its LLM is random; paper: compressor + projector); ``stages`` (if given)
    overrides it per step range (the paper: compressor + projector first, then the LLM too)."""

    steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    train_modules: list[str] = field(default_factory=list)
    stages: list[TrainStage] = field(default_factory=list)
    bf16: bool = True  # autocast on GPU only
    parallel: str = "auto"  # auto (fsdp for the paper preset, else ddp) | ddp | fsdp
    checkpoint_every: int = 100
    log_every: int = 10
    max_grad_norm: float = 1.0
    # experiment trackers the run also reports to (harness.trackers: wandb, tensorboard, mlflow), as the
    # transformers Trainer's report_to. Where a run reports, not what it computes: left out of the run id
    # and config_hash (UNHASHED_FIELDS), so adding a tracker reuses finished results and checkpoints
    report_to: list[str] = field(default_factory=list)
    # how the step executes, not what it computes (also UNHASHED_FIELDS): recompute each LLM decoder layer in
    # the backward pass (what lets an uncompressed 64-frame video through a 7B LLM fit one GPU), and
    # torch.compile the compressor's spatial stage (GPU only; static shapes)
    activation_checkpointing: bool = False
    compile_compressor: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.report_to:
            for i, name in enumerate(self.report_to):
                check_choice(f"report_to[{i}]", name, TRACKERS)
            if len(set(self.report_to)) != len(self.report_to):
                raise ConfigError("report_to", f"a tracker is named twice in {self.report_to}")
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        for i, m in enumerate(self.train_modules):
            check_choice(f"train_modules[{i}]", m, TRAIN_MODULES)
        check_choice("parallel", self.parallel, ("auto", "ddp", "fsdp"))
        for st in self.stages:
            if st.start_frac >= 0:
                st.start_step = math.ceil(st.start_frac * self.steps)
        if self.stages:
            starts = [s.start_step for s in self.stages]
            if starts[0] != 0:
                raise ConfigError("stages[0].start_step",
                                  f"the first stage must start at step 0, got {starts[0]}")
            for i in range(1, len(starts)):
                if not starts[i - 1] < starts[i] < self.steps:
                    raise ConfigError(f"stages[{i}].start_step",
                                      f"must be increasing and < steps={self.steps}, got {starts}")


#: evaluation-time model args of the lmms-eval plugin that ``eval.model_args`` may set (recorded with the run)
PLUGIN_EVAL_ARGS = ("max_frames_num", "fps", "chat_template", "max_new_tokens", "taa_threshold",
                    "taa_max_frames", "max_cached_videos", "cache_dir")


@dataclass
class EvalConfig:
    """Scoring of one trained run. ``backend: native`` scores the suite's items in-process by option
    log-likelihood (or generation); ``lmms_eval`` runs lmms-eval on the ``tasks`` (``lmms_eval_launch``:
    ``cli`` = the real ``lmms-eval`` command in a subprocess, ``inprocess`` = its Python evaluator)."""

    tasks: list[str] = field(default_factory=lambda: ["mia_long", "mia_dense"])
    mode: str = "loglik"  # loglik | generate
    backend: str = "native"  # native (in-process scorer) | lmms_eval (the real CLI's evaluator)
    lmms_eval_launch: str = "cli"  # cli | inprocess
    split: str = "test"
    limit: int = 0  # 0: all items
    batch_size: int = 16
    # lmms_eval backend: the plugin's evaluation-time args (PLUGIN_EVAL_ARGS), e.g. {max_frames_num: 64}
    model_args: dict[str, Any] = field(default_factory=dict)
    # evaluation-only: a compressor name (``vanilla``). The run trains nothing; it scores the checkpoint of
    # its parent, the run of this same config trained with that compressor and no token budget, with
    # ``model.compressor`` swapped in at test time (a training-free reducer onto the uncompressed LMM).
    # The sweep plans and runs the parent first; the run's identity holds the parent's run id.
    parent: str = ""

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("loglik", "generate"))
        bad = sorted(set(self.model_args) - set(PLUGIN_EVAL_ARGS))
        if bad:
            raise ConfigError(f"model_args.{bad[0]}", f"unknown plugin arg; allowed: {', '.join(PLUGIN_EVAL_ARGS)}")
        check_choice("backend", self.backend, ("native", "lmms_eval"))
        check_choice("lmms_eval_launch", self.lmms_eval_launch, ("cli", "inprocess"))
        if self.limit < 0:
            raise ConfigError("limit", f"must be >= 0 (0 = all), got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class RunConfig:
    """Everything one train+eval job needs; its hash is the run id."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    # lmm: compressor -> projector -> LLM (harness.train / harness.evaluate); probe: compressor -> fixed
    # read-out, cross-entropy over fixed options (harness.probe; the compress families only)
    protocol: str = "lmm"

    def __post_init__(self) -> None:
        check_choice("protocol", self.protocol, ("lmm", "probe"))
        ds = get_dataset(self.data.dataset)
        for i, st in enumerate(self.train.stages):
            ds.check_groups(st.families, f"train.stages[{i}].families")
        if self.model.visual_tokens:
            self.model.compressor = self._meet_budget()
        if self.eval.parent:
            self._check_parent()

    def parent_config(self) -> dict[str, Any]:
        """The resolved config dict of this evaluation-only run's parent: the same run trained with
        ``eval.parent``'s compressor (this one's widths), no token budget, not evaluation-only."""
        d = to_dict(self)
        c = self.model.compressor
        d["model"]["compressor"] = to_dict(build_config({"name": self.eval.parent, "d_in": c.d_in,
                                                         "d_model": c.d_model, "d_out": c.d_out}))
        d["model"]["visual_tokens"] = 0
        d["eval"]["parent"] = ""
        return to_dict(build(RunConfig, d))

    def _check_parent(self) -> None:
        if self.protocol != "lmm":
            raise ConfigError("eval.parent", "evaluation-only runs need protocol: lmm (the probe's read-out is "
                              "sized by its own compressor's tokens)")
        c = self.model.compressor
        try:
            parent = build_config({"name": self.eval.parent, "d_in": c.d_in, "d_model": c.d_model, "d_out": c.d_out})
        except ConfigError as e:
            raise ConfigError("eval.parent", e.message) from None
        if not (parent.tokenwise and c.tokenwise):
            raise ConfigError("eval.parent", f"a compressor swapped in at test time must load the parent's "
                              f"compressor weights: {self.eval.parent!r} and {c.name!r} must both be token-wise "
                              "(the uncompressed vanilla compressor, or a training-free reducer)")

    def _meet_budget(self) -> CompressorConfigBase:
        """``model.compressor`` changed to pass exactly ``model.visual_tokens`` tokens per video (a fixed
        point: a config that meets it already comes back unchanged, so a resolved config rebuilds to itself)."""
        B, T, P = self.model.visual_tokens, self.data.n_frames, self.model.encoder.patches_per_frame
        if B > T * P:
            raise ConfigError("model.visual_tokens", f"budget {B} is larger than the input: {T} frames x {P} "
                              f"patches = {T * P} tokens")
        comp = self.model.compressor.meet_budget(B, T, P, self.model.budget_by)
        n = comp.count_tokens(T, P)
        if n != B:  # a registry entry's meet_budget that misses its own count is a bug, said as such
            raise ConfigError("model.visual_tokens", f"compressor {comp.name!r} was set to meet {B} tokens but "
                              f"counts {n} for T={T} x P={P}")
        return comp


@dataclass
class ComputeProfile:
    """Where and how a sweep's jobs run; loaded from ``slurm/<name>.yaml`` by ``--profile``."""

    executor: str = "local"  # local | slurm | debug
    partition: str = ""
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    time_min: int = 60
    array_parallelism: int = 16
    qos: str = ""
    account: str = ""
    max_parallel_local: int = 0  # 0: os.cpu_count() // cpus_per_task
    additional_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH ..." option strings
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    # slurm: processes per run (--ntasks-per-node); > 1 trains with torch.distributed (DDP / FSDP), one
    # process per GPU, rank 0 evaluates and writes the record
    tasks_per_node: int = 1

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, ("local", "slurm", "debug"))
        if self.tasks_per_node < 1:
            raise ConfigError("tasks_per_node", f"must be >= 1, got {self.tasks_per_node}")
