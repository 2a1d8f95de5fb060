"""Token-clustering helpers of the merging reducers (FastVID, HoliTom, VisionZip): even shares of a budget,
density-peak clustering (DPC-kNN) scores, ranks and k-smallest distances. No registry entry here."""

from __future__ import annotations

import math

import torch

from harness.model.compressors.base import gather_tokens


def even_split(n: int, groups: int) -> list[int]:
    """``n`` over ``groups`` equal groups: shares differing by at most one, the larger ones spread evenly
    (centred steps), summing to exactly ``n``."""
    h = groups // 2
    return [((g + 1) * n + h) // groups - (g * n + h) // groups for g in range(groups)]


def spread(total: int, caps: list[int]) -> list[int]:
    """``total`` spread as evenly as the caps allow over ``len(caps)`` slots (each at most its cap); needs
    ``total <= sum(caps)``. Pure Python: the budgets are a few ints per frame."""
    out = [0] * len(caps)
    left = total
    while left > 0:
        open_ = [i for i, c in enumerate(caps) if out[i] < c]
        if not open_:
            raise ValueError(f"spread: {total} tokens but only {sum(caps)} places")
        m = len(open_)
        for j, i in enumerate(open_):
            out[i] += min((j + 1) * left // m - j * left // m, caps[i] - out[i])
        left = total - sum(out)
    return out


take_tokens = gather_tokens  # flat (B, L, D), index (B, n) -> (B, n, D)


def unit(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| along the last dim (zero stays zero), as a product: faster than F.normalize on the CPU."""
    return x * x.norm(dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()


def rank_desc(score: torch.Tensor) -> torch.Tensor:
    """The rank of every entry along the last dim, highest first, ties to the lower index: (..., P) long."""
    order = score.argsort(dim=-1, descending=True, stable=True)
    ar = torch.arange(score.shape[-1], device=score.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ar)


BIG = 1e30  # the squared distance of a padding token (finite: masks are added, not selected)


def k_smallest(d: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest entries of each row of a symmetric (N, W, W) matrix of distances whose diagonal (a
    token to itself) is 0, ascending: (N, W, k); the first is that 0.

    On the CPU with many rows, ``topk``'s per-row cost dominates; there the k - 1 running minima over the
    other columns are kept instead (a column of a symmetric matrix is a row: contiguous): the same values."""
    rows, width, _ = d.shape
    few = rows * 0.65 < (2 * k - 3) * 3  # per-row topk (~0.65 µs) vs width * (2k - 3) small ops (~3 µs)
    if d.device.type != "cpu" or few or k == 1:
        return d.topk(k, dim=-1, largest=False).values
    diag = d.diagonal(dim1=1, dim2=2)
    diag.fill_(math.inf)  # the others only, then the 0 in front
    m = [torch.full((rows, width), math.inf) for _ in range(k - 1)]
    t = torch.empty(rows, width)
    for c in d.unbind(1):
        for a in range(k - 2, 0, -1):
            torch.minimum(m[a], torch.maximum(m[a - 1], c, out=t), out=m[a])
        torch.minimum(m[0], c, out=m[0])
    diag.zero_()
    return torch.stack([torch.zeros(rows, width)] + m, -1)


def dpc_knn(x: torch.Tensor, valid: torch.Tensor, k: int | torch.Tensor):
    """Density-peak (DPC-kNN) scores of the valid tokens of each row, which cluster among themselves.

    x (N, P, D); valid (N, P) bool; k: neighbours in the density (the token itself counted), an int or
    (N, P) long. Distance ``||x_i - x_j|| / sqrt(D)``; ``rho = exp(-mean squared distance to the k
    nearest)``; ``delta`` = distance to the nearest denser token (equal densities: the lower index is
    denser); the densest token gets the row's largest ``delta`` (the reference: the largest distance; both
    rank it first).

    The work runs on each row's valid tokens only, packed to the left in patch order (W = the most of any
    row; no packing when that would leave out under a quarter); a padding column is ``BIG`` away from
    everything. Returns the score
    ``rho * delta`` (N, P) float32 (-inf where not valid), the packed tokens' patches ``cols`` (N, W),
    their squared distances (N, W, W) and the bound above which a squared distance involves padding."""
    N, P, D = x.shape
    dev = x.device
    W = max(int(valid.sum(-1).max()), 1) if N else 1
    if 4 * W > 3 * P:  # hardly any to leave out: the copy would cost more than it saves
        W, cols, ok, X = P, torch.arange(P, device=dev).expand(N, P), valid, x.float()
    else:
        cols = (~valid).long().argsort(dim=-1, stable=True)[:, :W]  # valid tokens first, in patch order
        ok = valid.gather(1, cols)  # (N, W)
        X = take_tokens(x.float(), cols)  # (N, W, D)
    sq = X.norm(dim=-1).square_().div_(D)
    bound = BIG / 2
    if not bool(ok.all()):  # padding: BIG away from everything (added to its squared norm: exact elsewhere)
        sq = sq + (~ok).float() * BIG
    # (fresh large tensors cost page faults on the CPU: the (N, W, W) work is in place, in two buffers)
    d2 = (sq[:, :, None] + sq[:, None, :]).baddbmm_(X, X.transpose(1, 2), alpha=-2.0 / D).clamp_min_(0)
    d2.diagonal(dim1=1, dim2=2).zero_()
    kc = k if isinstance(k, int) else k.gather(1, cols)
    kmax = min(W, k if isinstance(k, int) else int(kc.max()))
    near = k_smallest(d2, max(kmax, 1))  # (N, W, kmax): squared distances, ascending
    use = near < bound
    if not isinstance(k, int):
        use &= torch.arange(near.shape[-1], device=dev) < kc[..., None]
    use = use.float()
    rho = torch.exp(-(near * use).sum(-1) / use.sum(-1).clamp_min(1))
    r = rank_desc(rho).float()
    not_denser = torch.sub(r[:, None, :], r[:, :, None] - 1).clamp_(0, 1)  # [i, j]: j is not denser than i
    nearest2 = not_denser.mul_(4 * bound).add_(d2).amin(-1)
    found = (nearest2 < bound) & ok
    delta = nearest2.sqrt()
    top = torch.where(found, delta, 0.0).amax(-1, keepdim=True)
    delta = torch.where(found, delta, top)
    score_c = torch.where(ok, rho * delta, -math.inf)
    score = torch.full((N, P), -math.inf, device=dev).scatter_(1, cols, score_c)
    return score, cols, d2, bound


# ------------------------------------------------------------------------------------------ the entry
