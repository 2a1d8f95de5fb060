"""The selective scan as compiled CPU loops (numba): the same math as ``reference.py``, float32.

One job per (batch row, block of channels) walks the time steps in order, the state of its channels
(``(n, DB)`` floats) held in cache and the inner loops running over the channels, vectorised. That loop
vectorises because ``exp`` is computed inline (``_exp_row``: Cody-Waite range reduction, a degree-6 Taylor
polynomial, the power of two built from its exponent bits; ~1e-7 relative, the float32 rounding): numba's
``math.exp`` is a scalar libm call here, and with it the same loops ran 4x slower. A is passed transposed,
``(n, d)``, so that every row the loops read is contiguous.

The forward pass keeps the state entering every ``K``-step chunk (``(L / K, b, d, n)``). The backward pass
walks the chunks right to left: it recomputes the chunk's states and decays from its checkpoint, then runs
the adjoint recurrence ``lam_t = C_t g_t + a_{t+1} lam_{t+1}`` over the chunk and accumulates every
gradient. ``dB`` and ``dC`` sum over channels, so each channel block writes its own partial sum (summed
afterwards, no races); ``dA`` sums over batch rows and time, one partial per batch row.

Compiled on first use and cached beside this file (``cache=True``). The jobs run on
``torch.get_num_threads()`` Python threads (the kernels release the GIL), never on numba's OpenMP pool.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

K = 64  # steps between the forward pass's state checkpoints
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)  # ln 2 split in two so k * LN2_HI is exact in float32
LN2_LO = np.float32(-2.12194440e-4)
X_MIN = np.float32(-87.0)  # exp(-87) ~ 1.6e-38: below, 2^k leaves the normal range
_JIT = {"nogil": True, "fastmath": True, "cache": True, "boundscheck": False, "error_model": "numpy"}
_POOL: list[ThreadPoolExecutor] = []  # one pool, grown to the thread count asked for
os.register_at_fork(after_in_child=_POOL.clear)  # a forked child (a DataLoader worker) has none of its threads


@njit(inline="always", fastmath=True)
def _exp_row(scale, arow, out, bits):
    """out[j] = exp(scale[j] * arow[j]) for every j, in a loop LLVM vectorises. ``bits``: int32 scratch whose
    float32 view multiplies in 2^k; arguments of exp below X_MIN give ~0, as float32 does."""
    pow2 = bits.view(np.float32)
    for j in range(arow.shape[0]):
        x = max(scale[j] * arow[j], X_MIN)
        k = np.floor(x * LOG2E + np.float32(0.5))
        r = x - k * LN2_HI - k * LN2_LO  # |r| <= ln2 / 2
        q = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (np.float32(1 / 6) + r * (
            np.float32(1 / 24) + r * (np.float32(1 / 120) + r * np.float32(1 / 720))))))
        out[j] = q
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for j in range(arow.shape[0]):
        out[j] *= pow2[j]


@njit(**_JIT)
def _forward(u, dt, At, B, C, y, ckpt, nblk, job0, job1):
    """u, dt, y: (L, b, d); At: (n, d) (A transposed); B, C: (L, b, n); ckpt: (ceil(L / K), b, n, d), written.
    Job = (batch row, block of DB channels), jobs [job0, job1) of b * nblk; the state is (n, DB), the inner
    loops run over channels."""
    L, b, d = u.shape
    n = At.shape[0]
    DB = (d + nblk - 1) // nblk
    for job in range(job0, job1):
        bi, d0 = job // nblk, (job % nblk) * DB
        d1 = min(d, d0 + DB)
        nd = d1 - d0
        h = np.zeros((n, nd), dtype=np.float32)
        a = np.empty(nd, dtype=np.float32)
        bits = np.empty(nd, dtype=np.int32)
        du = np.empty(nd, dtype=np.float32)
        acc = np.empty(nd, dtype=np.float32)
        for t in range(L):
            if t % K == 0:
                ckpt[t // K, bi, :, d0:d1] = h
            dtr = dt[t, bi, d0:d1]
            ur = u[t, bi, d0:d1]
            for j in range(nd):
                du[j] = dtr[j] * ur[j]
                acc[j] = 0.0
            for i in range(n):
                _exp_row(dtr, At[i, d0:d1], a, bits)
                bv, cv, hr = B[t, bi, i], C[t, bi, i], h[i]
                for j in range(nd):
                    hv = a[j] * hr[j] + du[j] * bv
                    hr[j] = hv
                    acc[j] += cv * hv
            y[t, bi, d0:d1] = acc


@njit(**_JIT)
def _backward(u, dt, At, B, C, gy, ckpt, nblk, gu, gdt, gAt_rows, gB_blk, gC_blk, job0, job1):
    """The adjoint of ``_forward`` for jobs [job0, job1). Writes gu, gdt (L, b, d); gAt_rows (b, n, d), one
    partial per batch row; gB_blk, gC_blk (nblk, L, b, n), one partial per channel block."""
    L, b, d = u.shape
    n = At.shape[0]
    DB = (d + nblk - 1) // nblk
    for job in range(job0, job1):
        bi, blk = job // nblk, job % nblk
        d0 = blk * DB
        d1 = min(d, d0 + DB)
        nd = d1 - d0
        hbuf = np.empty((K, n, nd), dtype=np.float32)  # h_t of the chunk
        abuf = np.empty((K, n, nd), dtype=np.float32)  # a_t = exp(dt_t A) of the chunk
        kap = np.zeros((n, nd), dtype=np.float32)  # a_{t+1} lam_{t+1}
        bits = np.empty(nd, dtype=np.int32)
        du = np.empty(nd, dtype=np.float32)
        g_dtu = np.empty(nd, dtype=np.float32)
        g_da = np.empty(nd, dtype=np.float32)
        for c in range((L + K - 1) // K - 1, -1, -1):
            t0 = c * K
            t1 = min(L, t0 + K)
            for t in range(t0, t1):  # recompute the chunk's states from its checkpoint
                k = t - t0
                dtr = dt[t, bi, d0:d1]
                ur = u[t, bi, d0:d1]
                for i in range(n):
                    _exp_row(dtr, At[i, d0:d1], abuf[k, i], bits)
                    prev = hbuf[k - 1, i] if k > 0 else ckpt[c, bi, i, d0:d1]
                    bv, ar, hr = B[t, bi, i], abuf[k, i], hbuf[k, i]
                    for j in range(nd):
                        hr[j] = ar[j] * prev[j] + dtr[j] * ur[j] * bv
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                g = gy[t, bi, d0:d1]
                dtr = dt[t, bi, d0:d1]
                ur = u[t, bi, d0:d1]
                for j in range(nd):
                    du[j] = dtr[j] * ur[j]
                    g_dtu[j] = 0.0
                    g_da[j] = 0.0
                for i in range(n):
                    prev = hbuf[k - 1, i] if k > 0 else ckpt[c, bi, i, d0:d1]
                    bv, cv, ar, hr, kr = B[t, bi, i], C[t, bi, i], abuf[k, i], hbuf[k, i], kap[i]
                    Ar, gAr = At[i, d0:d1], gAt_rows[bi, i, d0:d1]
                    gb = np.float32(0.0)
                    gc = np.float32(0.0)
                    for j in range(nd):
                        lam = cv * g[j] + kr[j]
                        g_dtA = lam * ar[j] * prev[j]  # d loss / d (dt_t A)
                        gAr[j] += g_dtA * dtr[j]
                        g_da[j] += g_dtA * Ar[j]
                        g_dtu[j] += lam * bv
                        gb += lam * du[j]
                        gc += g[j] * hr[j]
                        kr[j] = ar[j] * lam
                    gB_blk[blk, t, bi, i] = gb
                    gC_blk[blk, t, bi, i] = gc
                for j in range(nd):
                    gu[t, bi, d0 + j] = g_dtu[j] * dtr[j]
                    gdt[t, bi, d0 + j] = g_dtu[j] * ur[j] + g_da[j]


def channel_blocks(b: int, d: int, threads: int) -> int:
    """How many blocks each row's channels are cut into: just enough jobs to give every thread one (long
    inner loops over channels vectorise best), blocks of at least 16 channels."""
    return max(1, min(max(1, d // 16), math.ceil(threads / max(1, b))))


def run_jobs(kernel, args: tuple, n_jobs: int, threads: int) -> None:
    """``kernel(*args, job0, job1)`` over jobs [0, n_jobs): in this thread, or cut into ``threads`` ranges run
    on a thread pool (the kernels release the GIL). Python threads wait on a lock, where an OpenMP pool
    spins: numba's ``prange`` pool, idle between calls, took a core from the run beside it."""
    threads = max(1, min(threads, n_jobs))
    if threads == 1:
        kernel(*args, 0, n_jobs)
        return
    if not _POOL or _POOL[0]._max_workers < threads:
        _POOL[:] = [ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scan")]
    cuts = [n_jobs * i // threads for i in range(threads + 1)]
    for f in [_POOL[0].submit(kernel, *args, cuts[i], cuts[i + 1]) for i in range(threads)]:
        f.result()


class SelectiveScanNumba(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, float32 on a CPU. Time-leading layout
    (as ``scan_torch._SelectiveScan``): u, dt: (L, b, d); A: (d, n); B, C: (L, b, n). Returns y (L, b, d)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        threads = torch.get_num_threads()
        u, dt, A, B, C = (t.detach().contiguous() for t in (u, dt, A, B, C))
        L, b, d = u.shape
        nblk = channel_blocks(b, d, threads)
        At = A.t().contiguous()
        y = torch.empty_like(u)
        ckpt = u.new_empty(-(-L // K), b, A.shape[1], d)
        run_jobs(_forward, (u.numpy(), dt.numpy(), At.numpy(), B.numpy(), C.numpy(), y.numpy(), ckpt.numpy(), nblk),
                 b * nblk, threads)
        ctx.save_for_backward(u, dt, At, B, C, ckpt)
        ctx.nblk = nblk
        return y

    @staticmethod
    def backward(ctx, gy):
        u, dt, At, B, C, ckpt = ctx.saved_tensors
        L, b, d = u.shape
        n, nblk = At.shape[0], ctx.nblk
        gy = gy.detach().float().contiguous()
        gu, gdt = torch.empty_like(u), torch.empty_like(dt)
        gAt_rows = u.new_zeros(b, n, d)
        gB_blk, gC_blk = u.new_empty(nblk, L, b, n), u.new_empty(nblk, L, b, n)
        run_jobs(_backward, (u.numpy(), dt.numpy(), At.numpy(), B.numpy(), C.numpy(), gy.numpy(), ckpt.numpy(), nblk,
                             gu.numpy(), gdt.numpy(), gAt_rows.numpy(), gB_blk.numpy(), gC_blk.numpy()),
                 b * nblk, torch.get_num_threads())
        return gu, gdt, gAt_rows.sum(0).t(), gB_blk.sum(0), gC_blk.sum(0)
