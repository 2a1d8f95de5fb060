"""The merging training-free reducers: VisionZip, FastVID and HoliTom's outer stage.

Each one's defining property on a constructed input, then what every reducer owes the harness: exactly
``n`` tokens for any input (degenerate ones included), valid frame indices in time order, the same
output for the same input, and building through the registry.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.model.compressors.clustering import dpc_knn, k_smallest
from harness.model.compressors.fastvid import FastVID, FastVIDConfig
from harness.model.compressors.holitom import HoliTom, HoliTomConfig, static_windows
from harness.model.compressors.visionzip import VisionZip, VisionZipConfig
from harness.model.registry import build_compressor, get_entry
from harness.schema import ConfigError

REDUCERS = {"visionzip": (VisionZip, VisionZipConfig), "fastvid": (FastVID, FastVIDConfig),
            "holitom": (HoliTom, HoliTomConfig)}


def make(name: str, **fields):
    module_cls, config_cls = REDUCERS[name]
    return module_cls(config_cls(name=name, d_in=8, d_model=8, d_out=8, **fields))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


# ------------------------------------------------------------------------------------------ VisionZip
def test_visionzip_keeps_top_saliency_and_averages_the_rest():
    """One frame of 16 tokens, 8 kept: the 6 most salient as they are, and 2 contextual tokens, each the
    mean of its strided target and the remaining tokens most similar to it."""
    P, D = 16, 8
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.eye(D)[0], torch.eye(D)[1]
    feats = torch.randn(1, 1, P, D, generator=g) * 0.05
    top = [1, 4, 7, 9, 12, 15]  # the dominant tokens (known top-6 saliency)
    rest = [p for p in range(P) if p not in top]  # 10 left: targets at 0 and 5 of them (step 10 // 2)
    for i, p in enumerate(rest):
        feats[0, 0, p] += 3 * (e1 if i < 5 else e2)  # rest[0..4] near e1, rest[5..9] near e2
    sal = torch.rand(1, 1, P, generator=g)
    sal[0, 0, top] = 10 + torch.arange(6.0)
    m = make("visionzip", ratio=0.5, contextual_frac=2 / 8)
    red = m.reduce(feats, 8, sal)
    assert red.tokens.shape == (1, 8, D)
    # in time (patch) order: dominant tokens at their places, contextual ones at their targets' (rest[0],
    # rest[5])
    places = sorted(top + [rest[0], rest[5]])
    for j, p in enumerate(places):
        if p in top:
            torch.testing.assert_close(red.tokens[0, j], feats[0, 0, p])
        else:
            members = rest[:5] if p == rest[0] else rest[5:]
            torch.testing.assert_close(red.tokens[0, j], feats[0, 0, members].mean(0))
    assert red.frame_index.tolist() == [[0] * 8]


def test_visionzip_splits_the_budget_over_frames():
    """Every frame gets an equal share of n (differing by one at most), so each frame is represented."""
    feats = torch.randn(2, 4, 16, 8, generator=torch.Generator().manual_seed(1))
    red = make("visionzip").reduce(feats, 10, feats.norm(dim=-1))
    counts = torch.stack([(red.frame_index == t).sum(1) for t in range(4)], 1)
    assert counts.sum(1).tolist() == [10, 10] and counts.min() >= 2 and counts.max() <= 3


# -------------------------------------------------------------------------------------------- FastVID
def two_scenes(T: int = 8, P: int = 16, D: int = 8, cut: int = 4, seed: int = 0) -> torch.Tensor:
    """A video whose frames 0..cut-1 show scene A and cut..T-1 scene B (mostly in the other half of the
    channels), each frame a little noisy: consecutive frames of a scene have cosine > 0.9, across the
    cut about 0."""
    g = torch.Generator().manual_seed(seed)
    a, b = 0.3 * torch.randn(P, D, generator=g), 0.3 * torch.randn(P, D, generator=g)
    a[:, : D // 2] += 1.0
    b[:, D // 2:] += 1.0
    frames = [(a if t < cut else b) + 0.02 * torch.randn(P, D, generator=g) for t in range(T)]
    return torch.stack(frames)[None]


@pytest.mark.parametrize("c", [1, 2])
def test_fastvid_cuts_at_the_scene_change(c):
    feats = two_scenes()
    m = make("fastvid", c=c, tau=0.9, ratio=0.25)
    red = m.reduce(feats, m.count_tokens(8, 16), feats.norm(dim=-1))
    assert red.aux["boundaries"] == [[4]]
    frames = set(red.frame_index[0].tolist())
    assert frames & {0, 1, 2, 3} and frames & {4, 5, 6, 7}


def test_fastvid_default_c_cuts_the_least_similar_transitions():
    """With c = 8 over 8 frames every transition is cut (c - 1 = 7): single-frame segments."""
    feats = two_scenes()
    red = make("fastvid").reduce(feats, 32, feats.norm(dim=-1))
    assert red.aux["boundaries"] == [[1, 2, 3, 4, 5, 6, 7]]


def test_fastvid_keeps_salient_tokens_and_merges_anchors_in_the_feature_space():
    """d = 0: only the salient tokens of each frame, as they are. d = 1: only merged anchors, each a
    convex mix of same-segment tokens, placed on the anchor frames (every p-th from the segment's end)."""
    feats = two_scenes(seed=3)
    sal = torch.rand(1, 8, 16, generator=torch.Generator().manual_seed(4))
    red = make("fastvid", d=0.0, c=1).reduce(feats, 16, sal)
    want = sal.topk(2, dim=-1).indices.sort(-1).values  # 2 per frame
    torch.testing.assert_close(red.tokens[0], feats[0].gather(1, want[0, ..., None].expand(8, 2, 8)).reshape(16, 8))
    red = make("fastvid", d=1.0, c=1, p=4).reduce(feats, 16, sal)
    assert sorted(set(red.frame_index[0].tolist())) == [3, 7]  # the anchor frames of [0..3] and [4..7]
    mean_a, mean_b = feats[0, :4].reshape(-1, 8).mean(0), feats[0, 4:].reshape(-1, 8).mean(0)
    for tok, f in zip(red.tokens[0], red.frame_index[0].tolist()):
        own, other = (mean_a, mean_b) if f < 4 else (mean_b, mean_a)
        assert (tok - own).norm() < (tok - other).norm()  # merged within its own segment


def test_fastvid_merge_weight():
    """One frame, all context (d = 1), one token kept: the anchor is the density peak of the tight trio
    (the far token has almost no density), and every token joins it: w = max(1 / (4 + 1), beta) = 0.6."""
    toks = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0]])
    red = make("fastvid", d=1.0).reduce(toks[None, None], 1, torch.zeros(1, 1, 4))
    torch.testing.assert_close(red.tokens[0, 0], 0.6 * toks[1] + 0.4 * toks.mean(0))


# -------------------------------------------------------------------------------------------- HoliTom
def static_and_moving(T: int = 6, P: int = 16, D: int = 8, seed: int = 0) -> torch.Tensor:
    """Patches 0..P/2-1 show the same content in every frame, up to a +-0.05 wobble along channel 2 that
    averages to zero over the frames; patches P/2.. change completely every frame."""
    g = torch.Generator().manual_seed(seed)
    half = P // 2
    still = torch.randn(half, D, generator=g)
    still[:, 2] = 0
    still[:, 0] += 4.0  # marks the still region (channel 0)
    frames = []
    for t in range(T):
        moving = torch.randn(P - half, D, generator=g)
        moving[:, 0] = 0
        moving[:, 1] += 1.0
        wobble = torch.zeros(half, D)
        wobble[:, 2] = 0.05 * (1 if t % 2 == 0 else -1)
        frames.append(torch.cat([still + wobble, moving]))
    return torch.stack(frames)[None]


def test_holitom_averages_a_static_region_over_time():
    T, P, D = 6, 16, 8
    feats = static_and_moving(T, P, D)
    m = make("holitom", ratio=0.25)
    n = m.count_tokens(T, P)
    red = m.reduce(feats, n, feats.norm(dim=-1))
    assert red.aux["segments"] == [[[0, T - 1]]] and red.aux["static"] == [P // 2]
    from_still = red.tokens[0, :, 0] > 2
    from_moving = red.tokens[0, :, 0] == 0
    assert red.tokens.shape == (1, n, D) and from_moving.sum() == n - from_still.sum()
    assert 0 < from_still.sum() < n - from_still.sum()  # fewer tokens from the static region
    assert set(red.frame_index[0][from_still].tolist()) == {0}  # at the window's first frame
    # the wobble (+-0.05 per frame) averages out: these are time means, not any frame's token
    assert red.tokens[0, from_still, 2].abs().max() < 1e-5


def test_holitom_merge_weight():
    """One frame, d = 1 (the dynamic budget all DPC-kNN centres), one token: with k = min(K, 1) = 1 every
    density ties, the first token is the peak, and the others join it: beta * centre + (1 - beta) * mean."""
    toks = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0]])
    red = make("holitom", d=1.0).reduce(toks[None, None], 1, torch.zeros(1, 1, 4))
    torch.testing.assert_close(red.tokens[0, 0], 0.6 * toks[0] + 0.4 * toks[1:].mean(0))


def test_holitom_static_windows_dynamic_programme():
    """Frames 0-2 share 3 static positions, 3-5 share 2: two windows; a tie keeps single frames."""
    # counts[i][l - 1]: positions static over the l + 1 frames ending at frame i + 1
    counts = [[3, 0, 0, 0, 0], [3, 3, 0, 0, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0], [2, 2, 0, 0, 0]]
    assert static_windows(counts, 6, 1024) == [(0, 2), (3, 5)]
    assert static_windows(counts, 6, 2) == [(0, 1), (2, 2), (3, 4), (5, 5)]
    assert static_windows([[0] * 5] * 5, 6, 1024) == [(t, t) for t in range(6)]


def test_holitom_still_video_gives_static_back_to_meet_a_large_budget():
    """All frames identical: averaging everything would leave P tokens; n = 3P needs some positions
    back as dynamic, and the count is still exact."""
    feats = torch.randn(1, 1, 16, 8, generator=torch.Generator().manual_seed(2)).expand(1, 6, 16, 8).clone()
    m = make("holitom", ratio=0.5)
    red = m.reduce(feats, 48, feats.norm(dim=-1))
    assert red.tokens.shape == (1, 48, 8) and 0 < red.aux["static"][0] < 16


# ----------------------------------------------------------------------------------------- DPC-kNN
def naive_dpc(x: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the textbook rule (loops) over the valid tokens: the score rho * delta, -inf elsewhere."""
    N, P, D = x.shape
    out = torch.full((N, P), -math.inf)
    for r in range(N):
        idx = [i for i in range(P) if valid[r, i]]
        xs = x[r, idx].double()
        d = torch.cdist(xs, xs) / math.sqrt(D)
        rho = torch.exp(-(d.sort(-1).values[:, : min(k, len(idx))] ** 2).mean(-1))
        delta = torch.empty(len(idx), dtype=torch.double)
        for a in range(len(idx)):
            denser = [b for b in range(len(idx)) if rho[b] > rho[a] or (rho[b] == rho[a] and b < a)]
            delta[a] = d[a, denser].min() if denser else -1
        delta[delta < 0] = delta.max().clamp_min(0)  # a lone token: 0 (the reference: its 0 distance)
        out[r, idx] = (rho * delta).float()
    return out


def test_dpc_knn_matches_the_textbook_rule():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 12, 4, generator=g)  # enough rows for the CPU's running-minima path
    valid = torch.rand(40, 12, generator=g) > 0.3
    valid[3] = False
    valid[3, 5] = True  # a lone token
    for k in (1, 4, 20):
        score = dpc_knn(x, valid, k)[0]
        want = naive_dpc(x, valid, k)
        assert torch.equal(torch.isinf(score), ~valid)
        torch.testing.assert_close(score[valid], want[valid], atol=1e-4, rtol=1e-4)


def test_k_smallest_matches_topk():
    """The CPU's running-minima path (many rows) gives topk's values, ties included."""
    x = torch.randn(64, 10, 3, generator=torch.Generator().manual_seed(8))
    d = (torch.cdist(x, x) * 2).round()  # many ties
    d = (d + d.transpose(1, 2)) / 2
    for k in (1, 4, 7):
        assert torch.equal(k_smallest(d, k), d.topk(k, dim=-1, largest=False).values)


# ------------------------------------------------------------------------------- every reducer's contract
VARIANTS = [("visionzip", {}), ("visionzip", {"contextual_frac": 1.0}), ("fastvid", {}),
            ("fastvid", {"c": 1, "tau": -1.0}), ("fastvid", {"d": 1.0, "p": 2}), ("holitom", {}),
            ("holitom", {"d": 0.5}), ("holitom", {"static_threshold": -1.0})]
SHAPES = [(8, 32, 64), (4, 16, 1), (4, 16, 64), (1, 16, 4), (1, 16, 16), (3, 5, 7), (6, 9, 50)]  # (T, P, n)


def inputs(T: int, P: int, D: int = 8):
    g = torch.Generator().manual_seed(T * 100 + P)
    rnd = torch.randn(2, T, P, D, generator=g)
    same = rnd[:, :1].expand(2, T, P, D)  # not contiguous, as a view may come
    return {"random": rnd, "identical_frames": same, "zeros": torch.zeros(2, T, P, D),
            "identical_tokens": torch.ones(2, T, P, D)}


@pytest.mark.parametrize("name,fields", VARIANTS, ids=[f"{n}-{'-'.join(f) or 'default'}" for n, f in VARIANTS])
def test_exact_budget_valid_frames_time_order_determinism(name, fields):
    m = make(name, **fields)
    for T, P, n in SHAPES:
        for kind, feats in inputs(T, P).items():
            sal = feats.norm(dim=-1)
            red = m.reduce(feats, n, sal)
            where = f"{name} {fields} T={T} P={P} n={n} {kind}"
            assert red.tokens.shape == (2, n, 8), where
            assert red.frame_index.shape == (2, n) and red.frame_index.dtype == torch.long, where
            assert ((red.frame_index >= 0) & (red.frame_index < T)).all(), where
            assert (red.frame_index.diff(dim=1) >= 0).all(), where  # time order
            assert torch.isfinite(red.tokens).all(), where
            if kind == "random":
                again = m.reduce(feats.clone(), n, sal.clone())
                assert torch.equal(red.tokens, again.tokens), where
                assert torch.equal(red.frame_index, again.frame_index) and red.aux == again.aux, where


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_keep_everything_returns_the_input(name):
    """n = T * P: nothing to reduce, every token as it is, in order (HoliTom: no static averaging)."""
    feats = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(6))
    red = make(name).reduce(feats, 15, feats.norm(dim=-1))
    torch.testing.assert_close(red.tokens, feats.reshape(2, 15, 8))
    assert red.frame_index.tolist() == [[t for t in range(3) for _ in range(5)]] * 2


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_builds_through_the_registry(name):
    entry = get_entry(name)
    assert entry.training_free and entry.module_cls is REDUCERS[name][0]
    m = build_compressor({"name": name, "d_in": 16, "d_model": 16, "d_out": 16, "ratio": 0.25})
    feats = torch.randn(2, 4, 9, 16, generator=torch.Generator().manual_seed(7))
    out = m(feats)
    n = m.count_tokens(4, 9)
    assert n == 9 and out.n_tokens == n
    assert out.tokens.shape == (2, n, 16) and out.frame_index.shape == (2, n)
    assert out.aux["saliency"] == "l2_norm"
    out.tokens.sum().backward()  # the token-wise maps train
    assert m.in_proj.weight.grad is not None


@pytest.mark.parametrize("name,field,value", [
    ("visionzip", "contextual_frac", 1.5), ("fastvid", "c", 0), ("fastvid", "tau", 2.0), ("fastvid", "d", -0.1),
    ("fastvid", "p", 0), ("fastvid", "beta", 1.5), ("fastvid", "knn", 0), ("holitom", "static_threshold", 1.5),
    ("holitom", "beta", -1.0), ("holitom", "knn", 0), ("holitom", "d", 2.0), ("holitom", "max_window", 0),
])
def test_configs_reject_bad_fields(name, field, value):
    with pytest.raises(ConfigError) as e:
        build_compressor({"name": name, field: value})
    assert e.value.path == f"model.compressor.{field}"
