"""Pure-PyTorch selective scan: the same math as ``reference.py``, fast and lean enough for a CPU.

The recurrence ``h_t = a_t * h_{t-1} + b_t`` (a_t = exp(delta_t A), b_t = delta_t B_t u_t, all (b, d, n))
is walked in *superchunks* of ``S`` steps whose (S, b, d, n) tensors stay in cache. Inside a superchunk a
two-level scan cuts the steps into ~sqrt(S) chunks: pass 1 walks the positions of every chunk at once
(vectorised over chunks) to get each chunk's end state, a short loop carries states across chunks, and
pass 2 walks the positions again from the right initial states, writing h. That is O(L) work in
~2 sqrt(S) Python iterations per S steps, never one per time step.

Only the superchunk boundary states are kept for the backward pass (a custom autograd Function), which
recomputes h per superchunk and runs the adjoint recurrence ``lam_t = C_t g_t + a_{t+1} lam_{t+1}`` with the
same scan run right-to-left (``_scan_block_rev``: no flipped copies). Memory is O(L (d + n)) plus one
superchunk, instead of O(L d n).

On a CPU a superchunk is ``SUPERCHUNK`` steps. On a GPU the loop is bound by kernel launches, not by cache,
so a superchunk grows to ``GPU_SUPERCHUNK_ELEMS`` elements per (S, b, d, n) tensor (at most
``GPU_SUPERCHUNK_MAX`` steps): fewer, larger launches for the same arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SUPERCHUNK = 512
CPU_SUPERCHUNK_ELEMS = 1 << 18  # elements of one (S, b, d, n) superchunk tensor on a CPU (1 MiB: one L2)
SEQUENTIAL_MIN_ELEMS = 8192  # per-step (b, d, n) size from which a plain step-by-step walk wins
GPU_SUPERCHUNK_ELEMS = 1 << 27  # elements of one (S, b, d, n) superchunk tensor on a GPU (512 MiB in fp32)
GPU_SUPERCHUNK_MAX = 4096


def superchunk_for(u: torch.Tensor, n: int) -> int:
    """Superchunk length for u (L, b, d) and state size n. On a CPU the largest power of two up to
    ``SUPERCHUNK`` whose (S, b, d, n) tensors stay within ``CPU_SUPERCHUNK_ELEMS`` (in cache: a fixed 512
    steps put 64 MiB tensors through every op at batch 16, and the step ran memory-bound, 4.7x slower);
    on a GPU the largest power of two in [SUPERCHUNK, GPU_SUPERCHUNK_MAX] whose tensors stay within
    ``GPU_SUPERCHUNK_ELEMS`` elements."""
    per_step = max(1, u.shape[1] * u.shape[2] * n)
    if not u.is_cuda:
        return 1 << max(0, min(SUPERCHUNK, max(1, CPU_SUPERCHUNK_ELEMS // per_step)).bit_length() - 1)
    s = 1 << max(0, (GPU_SUPERCHUNK_ELEMS // per_step).bit_length() - 1)
    return max(SUPERCHUNK, min(GPU_SUPERCHUNK_MAX, s))


def _scan_block(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = a_t * h_{t-1} + b_t for t < S, from h0. a, b: (S, *r); h0: (*r). Returns (h (S, *r), h_end)."""
    S = a.shape[0]
    if a[0].numel() >= SEQUENTIAL_MIN_ELEMS:  # each step is big enough to amortise an op: one pass, not two
        h = torch.empty_like(b)
        torch.addcmul(b[0], a[0], h0, out=h[0])
        for t in range(1, S):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])
        return h, h[-1]
    K = 1 << max(0, round(math.log2(max(1.0, math.sqrt(S / 2)))))  # minimises 2K + S/K loop steps
    nc = -(-S // K)
    pad = nc * K - S
    if pad:
        a = torch.cat([a, a.new_ones((pad, *a.shape[1:]))])
        b = torch.cat([b, b.new_zeros((pad, *b.shape[1:]))])
    a = a.view(nc, K, *a.shape[1:])
    b = b.view(nc, K, *b.shape[1:])
    # pass 1: every chunk's end state from a zero start, and its total decay
    s = b[:, 0].clone()
    for k in range(1, K):
        torch.addcmul(b[:, k], a[:, k], s, out=s)
    decay = a.prod(dim=1)
    carry = torch.empty_like(s)  # state entering each chunk
    carry[0] = h0
    for c in range(1, nc):
        torch.addcmul(s[c - 1], decay[c - 1], carry[c - 1], out=carry[c])
    h_end = torch.addcmul(s[-1], decay[-1], carry[-1])
    # pass 2: the states themselves, from the right initial states
    h = torch.empty_like(b)
    torch.addcmul(b[:, 0], a[:, 0], carry, out=h[:, 0])
    for k in range(1, K):
        torch.addcmul(b[:, k], a[:, k], h[:, k - 1], out=h[:, k])
    return h.view(nc * K, *h.shape[2:])[:S], h_end


def _scan_block_rev(c: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan right to left: h_t = c_t * h_{t+1} + b_t for t = S-1 .. 0, entering with h_S = h0.
    c, b: (S, *r); h0: (*r). Returns (h (S, *r), h_0). Padding goes in front (c = 1, b = 0), where it is
    walked last and touches no real step, so nothing is flipped or copied."""
    S = c.shape[0]
    if c[0].numel() >= SEQUENTIAL_MIN_ELEMS:
        h = torch.empty_like(b)
        torch.addcmul(b[-1], c[-1], h0, out=h[-1])
        for t in range(S - 2, -1, -1):
            torch.addcmul(b[t], c[t], h[t + 1], out=h[t])
        return h, h[0]
    K = 1 << max(0, round(math.log2(max(1.0, math.sqrt(S / 2)))))
    nc = -(-S // K)
    pad = nc * K - S
    if pad:
        c = torch.cat([c.new_ones((pad, *c.shape[1:])), c])
        b = torch.cat([b.new_zeros((pad, *b.shape[1:])), b])
    c = c.view(nc, K, *c.shape[1:])
    b = b.view(nc, K, *b.shape[1:])
    # pass 1: every chunk's first-step state from a zero start at its right end, and its total decay
    s = b[:, K - 1].clone()
    for k in range(K - 2, -1, -1):
        torch.addcmul(b[:, k], c[:, k], s, out=s)
    decay = c.prod(dim=1)
    carry = torch.empty_like(s)  # state entering each chunk from the right
    carry[nc - 1] = h0
    for ch in range(nc - 2, -1, -1):
        torch.addcmul(s[ch + 1], decay[ch + 1], carry[ch + 1], out=carry[ch])
    h_first = torch.addcmul(s[0], decay[0], carry[0])
    # pass 2: the states themselves
    h = torch.empty_like(b)
    torch.addcmul(b[:, K - 1], c[:, K - 1], carry, out=h[:, K - 1])
    for k in range(K - 2, -1, -1):
        torch.addcmul(b[:, k], c[:, k], h[:, k + 1], out=h[:, k])
    return h.view(nc * K, *h.shape[2:])[pad:], h_first


def _block_inputs(u, dt, A, B, sl):
    """a = exp(dt A), b = dt u B for the steps in ``sl``: (S, b, d, n) each."""
    a = torch.mul(dt[sl].unsqueeze(-1), A).exp_()
    bu = torch.mul((dt[sl] * u[sl]).unsqueeze(-1), B[sl].unsqueeze(2))
    return a, bu


class _SelectiveScan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t. Time-leading layout:
    u, dt: (L, b, d); A: (d, n); B, C: (L, b, n). Returns y: (L, b, d)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        L, bsz, d = u.shape
        h = u.new_zeros(bsz, d, A.shape[1])
        y = torch.empty_like(u)
        starts = []
        S = superchunk_for(u, A.shape[1])
        for s0 in range(0, L, S):
            sl = slice(s0, min(L, s0 + S))
            starts.append(h)
            a, bu = _block_inputs(u, dt, A, B, sl)
            hs, h = _scan_block(a, bu, h)
            y[sl] = torch.einsum("sbdn,sbn->sbd", hs, C[sl])
        ctx.save_for_backward(u, dt, A, B, C, torch.stack(starts))
        ctx.superchunk = S
        return y

    @staticmethod
    def backward(ctx, gy):
        u, dt, A, B, C, starts = ctx.saved_tensors
        L = u.shape[0]
        gu, gdt, gB, gC = (torch.empty_like(t) for t in (u, dt, B, C))
        gA = torch.zeros_like(A)
        kappa_next = torch.zeros_like(starts[0])  # a_t lam_t at the first step of the superchunk after
        S = ctx.superchunk
        blocks = list(range(0, L, S))
        for i in reversed(range(len(blocks))):
            sl = slice(blocks[i], min(L, blocks[i] + S))
            a, bu = _block_inputs(u, dt, A, B, sl)
            hs, _ = _scan_block(a, bu, starts[i])
            lam = gy[sl].unsqueeze(-1) * C[sl].unsqueeze(2)  # the direct term C_t g_t, made lam in place
            # kappa_t = a_t lam_t obeys kappa_t = a_t kappa_{t+1} + a_t (C_t g_t): a right-to-left scan with
            # the same coefficients as the forward one, so nothing is shifted or copied
            kappa = _scan_block_rev(a, a * lam, kappa_next)[0]
            lam[:-1] += kappa[1:]  # lam_t = C_t g_t + kappa_{t+1}
            lam[-1] += kappa_next
            kappa_next = kappa[0].clone()
            g_dtA = kappa  # d y / d (dt A) = lam_t a_t h_{t-1}, in place
            g_dtA[1:] *= hs[:-1]
            g_dtA[0] *= starts[i]
            dtu = dt[sl] * u[sl]
            g_dtu = torch.einsum("sbdn,sbn->sbd", lam, B[sl])
            gC[sl] = torch.einsum("sbd,sbdn->sbn", gy[sl], hs)
            gB[sl] = torch.einsum("sbdn,sbd->sbn", lam, dtu)
            gu[sl] = g_dtu * dt[sl]
            gdt[sl] = g_dtu * u[sl] + (g_dtA * A).sum(-1)
            gA += (g_dtA * dt[sl].unsqueeze(-1)).sum((0, 1))
        return gu, gdt, gA, gB, gC


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    kernel: type[torch.autograd.Function] | None = None,
) -> torch.Tensor:
    """Same signature and shapes as ``selective_scan_ref``: u, delta, z (b, d, L); A (d, n);
    B, C (b, n, L); D, delta_bias (d,). Computes in float32 (float64 if given float64). ``kernel``: an
    autograd Function with ``_SelectiveScan``'s layout to run the recurrence instead (the compiled CPU scan,
    float32 only: float64 inputs keep this module's)."""
    dtype = u.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(ct) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    fn = kernel if kernel is not None and ct == torch.float32 else _SelectiveScan
    y = fn.apply(
        u.permute(2, 0, 1).contiguous(), delta.permute(2, 0, 1).contiguous(), A.contiguous(),
        B.permute(2, 0, 1).contiguous(), C.permute(2, 0, 1).contiguous(),
    ).permute(1, 2, 0)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(dtype)
