"""The optimisation schedule of a run: its stages, which stage a step is in, the learning rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.config import RunConfig, TrainStage
from harness.model.presets import default_train_modules


def stages_of(cfg: RunConfig) -> list[TrainStage]:
    t = cfg.train
    if t.stages:
        return list(t.stages)
    mods = list(t.train_modules) or default_train_modules(cfg.model.llm)
    return [TrainStage(start_step=0, train_modules=mods)]


def stage_index(stages: Sequence[TrainStage], step: int) -> int:
    return max(i for i, s in enumerate(stages) if s.start_step <= step)


def lr_at(cfg: RunConfig, stages: Sequence[TrainStage], step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr``, restarted at every stage."""
    i = stage_index(stages, step)
    st = stages[i]
    end = stages[i + 1].start_step if i + 1 < len(stages) else cfg.train.steps
    base = st.lr or cfg.train.lr
    warm = cfg.train.warmup_steps if st.warmup_steps < 0 else st.warmup_steps
    k, n = step - st.start_step, end - st.start_step
    if warm and k < warm:
        return base * (k + 1) / warm
    frac = (k - warm) / max(1, n - warm)
    lo = cfg.train.min_lr_ratio
    return base * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
