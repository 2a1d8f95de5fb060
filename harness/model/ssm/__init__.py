"""One entry point for the selective scan, whatever runs it.

``selective_scan`` has mamba-ssm's ``selective_scan_fn`` signature. ``backend="auto"`` uses mamba-ssm's CUDA
kernel when it is importable and the tensors are on a GPU, and the pure-PyTorch chunked scan otherwise;
``"torch"``, ``"cuda"`` and ``"ref"`` force one. ``cuda_mamba_inner_fn`` is mamba-ssm's fused Mamba-1 path,
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


def have_cuda_kernels() -> bool:
    return torch.cuda.is_available() and cuda_selective_scan_fn() is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    return resolve(backend, device, cuda_selective_scan_fn, "ssm")


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
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_torch", "have_cuda_kernels", "cuda_mamba_inner_fn",
           "BACKENDS"]
