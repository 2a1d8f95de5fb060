"""Which implementation runs a scan: one rule for the Mamba-1 and the Mamba-2 (SSD) scans."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

BACKENDS = ("auto", "torch", "cuda", "ref")


def resolve(backend: str, device: torch.device, kernel: Callable[[], Any], what: str) -> str:
    """``auto`` -> ``cuda`` when the tensors are on a GPU and ``kernel()`` (mamba-ssm's function, or None
    when it cannot be imported) is available, else ``torch``. A forced ``cuda`` without both is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"{what} backend {backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuda" if device.type == "cuda" and kernel() is not None else "torch"
    if backend == "cuda" and (device.type != "cuda" or kernel() is None):
        raise RuntimeError(f"{what} backend 'cuda' needs mamba-ssm (pip install -e '.[cuda]') and tensors on a GPU")
    return backend
