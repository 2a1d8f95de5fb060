"""Which implementation runs a scan: one rule for the Mamba-1 and the Mamba-2 (SSD) scans."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

BACKENDS = ("auto", "torch", "cpu", "cuda", "ref")


def resolve(backend: str, device: torch.device, kernel: Callable[[], Any], what: str,
            cpu_kernel: Callable[[], Any] | None = None) -> str:
    """``auto`` -> ``cuda`` when the tensors are on a GPU and ``kernel()`` (mamba-ssm's function, or None
    when it cannot be imported) is available; ``cpu`` (compiled CPU loops) when they are on a CPU and
    ``cpu_kernel()`` is available; else ``torch``. A forced ``cuda`` or ``cpu`` that cannot run is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"{what} backend {backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    has_cpu = cpu_kernel is not None and device.type == "cpu" and cpu_kernel() is not None
    if backend == "auto":
        if device.type == "cuda" and kernel() is not None:
            return "cuda"
        return "cpu" if has_cpu else "torch"
    if backend == "cuda" and (device.type != "cuda" or kernel() is None):
        raise RuntimeError(f"{what} backend 'cuda' needs mamba-ssm (pip install -e '.[cuda]') and tensors on a GPU")
    if backend == "cpu" and not has_cpu:
        raise RuntimeError(f"{what} backend 'cpu' needs numba and tensors on a CPU"
                           + ("" if cpu_kernel is not None else f" (the {what} scan has no compiled CPU kernel)"))
    return backend
