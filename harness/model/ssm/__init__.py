"""One entry point for the selective scan, whatever runs it.

``selective_scan`` has mamba-ssm's ``selective_scan_fn`` signature. ``backend="auto"`` uses mamba-ssm's CUDA
kernel when it is importable and the tensors are on a GPU, the compiled CPU loops of ``scan_numba`` (numba)
on a CPU, and the pure-PyTorch chunked scan where neither can run (float64 always takes it); ``"torch"``,
``"cpu"``, ``"cuda"`` and ``"ref"`` force one. ``cuda_mamba_inner_fn`` is mamba-ssm's fused Mamba-1 path,
which ``harness.model.mamba.Mamba`` uses on a GPU when causal-conv1d is installed too.
"""

from __future__ import annotations

import functools

import torch

from .backends import BACKENDS, resolve
from .reference import selective_scan_ref
from .scan_torch import selective_scan_torch


@functools.cache
def cuda_selective_scan_fn():
    """mamba-ssm's CUDA ``selective_scan_fn``, or None when mamba-ssm (with its extension) is missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or the compiled extension failing to load
        return None
    return selective_scan_fn


@functools.cache
def cuda_mamba_inner_fn():
    """mamba-ssm's fused ``mamba_inner_fn`` (causal-conv1d's conv + x/dt projections + selective scan +
    output projection in one autograd function that recomputes the conv output and delta in the backward
    pass), or None when mamba-ssm or causal-conv1d's CUDA extension is missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import causal_conv1d_fwd_function, mamba_inner_fn
    except Exception:  # ImportError, or a compiled extension failing to load
        return None
    return mamba_inner_fn if causal_conv1d_fwd_function is not None else None


@functools.cache
def cpu_scan_fn():
    """The compiled CPU scan (``scan_numba.SelectiveScanNumba``), or None when numba is missing."""
    try:
        from .scan_numba import SelectiveScanNumba  # lazy: numba's import and JIT cost a second or two
    except ImportError:
        return None
    return SelectiveScanNumba


def have_cuda_kernels() -> bool:
    return torch.cuda.is_available() and cuda_selective_scan_fn() is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    return resolve(backend, device, cuda_selective_scan_fn, "ssm", cpu_scan_fn)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """u, delta, z: (b, d, L); A: (d, n); B, C: (b, n, L); D, delta_bias: (d,). Returns y: (b, d, L)."""
    which = resolve_backend(backend, u.device)
    if which == "cuda":
        fn = cuda_selective_scan_fn()
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if which == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    kernel = cpu_scan_fn() if which == "cpu" else None
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, kernel=kernel)


__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_torch", "have_cuda_kernels", "cuda_mamba_inner_fn",
           "BACKENDS"]
