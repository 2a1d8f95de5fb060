"""Helpers shared by the GPU benchmarks.

``bf16_pooling_guard()`` works around a bug found by these benchmarks: ``harness/model/pooling.py`` masks
scores with ``torch.finfo(torch.float32).min``, which does not fit in bfloat16, so every masked pooling
(weighted, max, attention, gpa) raises "value cannot be converted to type c10::BFloat16 without overflow"
under bf16 autocast. The guard tests for the bug and, only while it is there, sets the module's ``NEG`` to
bfloat16's lowest finite value (exactly the same softmax: the masked weights are 0 either way). Every
benchmark records whether it had to apply it.

``python benchmarks/gpu_common.py train ARGS...`` runs ``python -m harness.train ARGS...`` with the guard
applied (used by gpu_train_smoke.py).
"""

from __future__ import annotations

import runpy
import sys

import torch


def bf16_pooling_guard() -> bool:
    """Patch ``harness.model.pooling.NEG`` if it overflows bfloat16. Returns True when it patched."""
    from harness.model import pooling

    try:
        torch.zeros(1, dtype=torch.bfloat16).masked_fill(torch.ones(1, dtype=torch.bool), pooling.NEG)
        return False
    except RuntimeError:
        pooling.NEG = float(torch.finfo(torch.bfloat16).min)
        return True


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python benchmarks/gpu_common.py train [harness.train arguments]")
    patched = bf16_pooling_guard()
    print(f"bf16 pooling guard applied: {patched}", flush=True)
    sys.argv = ["harness.train", *sys.argv[2:]]
    runpy.run_module("harness.train", run_name="__main__", alter_sys=True)
