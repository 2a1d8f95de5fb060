"""The five selection / pooling reducers: uniform_pool, random, divprune, dycoke (stage 1), vidcom2.

Each defining property is checked on a constructed input (pooling equals average pooling, DivPrune's
farthest-point picks on a hand-made example, DyCoke dropping repeated frames, a seed fixing random,
VidCom2 giving a distinct frame a larger share), and every reducer on the shared contract: exactly n
tokens for every (T, P, n) including the edge cases, valid frame indices, time order, determinism, and
building through the registry.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.model.registry import build_compressor, get_entry
from harness.schema import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster, and steady on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


NAMES = ["uniform_pool", "random", "divprune", "dycoke", "vidcom2"]
SELECTORS = ["random", "divprune", "dycoke", "vidcom2"]  # keep encoder tokens as they are (no merging)
CASES = [(8, 64, 128), (8, 64, 1), (8, 64, 512), (8, 64, 3), (1, 16, 1), (1, 16, 16), (1, 16, 5),
         (3, 10, 7), (5, 9, 2), (4, 49, 50), (6, 7, 41), (9, 4, 30)]


def make(name: str, d: int = 8, **fields):
    return build_compressor({"name": name, "d_in": d, "d_model": d, "d_out": d, **fields})


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def reduce(m, feats: torch.Tensor, n: int):
    return m.reduce(feats, n, feats.float().norm(dim=-1))


def source_places(feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, n) flat index frame * P + patch of each kept token, found by exact match (distinct tokens)."""
    B, T, P, D = feats.shape
    eq = (tokens[:, :, None, :] == feats.reshape(B, 1, T * P, D)).all(-1)  # (B, n, TP)
    assert (eq.sum(-1) == 1).all(), "each kept token is exactly one encoder token"
    return eq.float().argmax(-1)


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", NAMES)
def test_exact_count_valid_frames_time_order_deterministic(name):
    m = make(name)
    g = torch.Generator().manual_seed(1)
    for T, P, n in CASES:
        feats = torch.randn(2, T, P, 8, generator=g)
        for x in (feats, torch.zeros_like(feats), feats[:, :1].expand(2, T, P, 8).contiguous()):
            red = reduce(m, x, n)
            assert red.tokens.shape == (2, n, 8), (name, T, P, n)
            assert red.frame_index.shape == (2, n) and red.frame_index.dtype == torch.long
            fi = red.frame_index
            assert fi.min() >= 0 and fi.max() < T
            assert (fi.diff(dim=1) >= 0).all(), "tokens in time order"
            assert torch.isfinite(red.tokens).all()
            again = reduce(m, x, n)
            assert torch.equal(again.tokens, red.tokens) and torch.equal(again.frame_index, red.frame_index)
        if name in SELECTORS:  # distinct inputs: the kept tokens are distinct encoder tokens, (frame, patch) sorted
            red = reduce(m, feats, n)
            places = source_places(feats, red.tokens)
            assert (places.diff(dim=1) > 0).all()
            assert torch.equal(torch.div(places, P, rounding_mode="floor"), red.frame_index)
        if name != "random":  # each video's rule alone: the batch does not change it (random: it may)
            one = reduce(m, feats[1:], n)
            assert torch.allclose(one.tokens[0], reduce(m, feats, n).tokens[1], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_builds_through_the_registry(name):
    assert get_entry(name).training_free
    m = build_compressor({"name": name, "d_in": 16, "d_model": 16, "d_out": 16, "ratio": 0.25})
    feats = torch.randn(2, 8, 16, 16)
    out = m(feats)
    assert out.tokens.shape == (2, 32, 16) and out.n_tokens == 32
    assert out.frame_index.shape == (2, 32) and out.frame_index.dtype == torch.long
    assert out.aux["saliency"] == "l2_norm"
    assert all(not isinstance(v, torch.Tensor) for v in out.aux.values())
    out.tokens.sum().backward()  # the token-wise maps train; the rule has no parameters
    assert m.in_proj.weight.grad is not None


@pytest.mark.parametrize("name, fields", [
    ("random", {"seed": -1}), ("divprune", {"scope": "clip"}), ("dycoke", {"window": 1}),
    ("dycoke", {"merging_ratio": 1.0}), ("vidcom2", {"temperature": 0.0}), ("vidcom2", {"alphas": []}),
    ("vidcom2", {"alphas": [1.0, -2.0]}), ("vidcom2", {"channel_ratio": 0.0}), ("uniform_pool", {"ratio": 0.0}),
])
def test_bad_fields_are_config_errors(name, fields):
    with pytest.raises(ConfigError) as e:
        make(name, **fields)
    assert next(iter(fields)) in str(e.value)


# -------------------------------------------------------------------------------------- uniform_pool
def test_uniform_pool_equals_average_pooling():
    B, T, s, D = 2, 4, 8, 5
    feats = torch.randn(B, T, s * s, D)
    red = reduce(make("uniform_pool", D), feats, T * 16)  # 16 a frame: 8x8 -> 4x4, a 2x2 kernel
    grid = feats.view(B * T, s, s, D).permute(0, 3, 1, 2)
    want = F.avg_pool2d(grid, 2).flatten(2).transpose(1, 2).reshape(B, T * 16, D)
    assert_close(red.tokens, want)
    assert torch.equal(red.frame_index[0], torch.arange(T).repeat_interleave(16))
    red = reduce(make("uniform_pool", D), feats, T * 8)  # 8 a frame: 2 x 4 cells of 4 x 2 patches
    want = F.avg_pool2d(grid, (4, 2)).flatten(2).transpose(1, 2).reshape(B, T * 8, D)
    assert_close(red.tokens, want)


def test_uniform_pool_along_tokens_and_in_time():
    feats = torch.randn(1, 3, 10, 4)  # P = 10 is no square: pool along the token axis
    red = reduce(make("uniform_pool", 4), feats, 15)
    assert_close(red.tokens, feats.view(1, 3, 5, 2, 4).mean(3).reshape(1, 15, 4))
    feats = torch.randn(1, 4, 9, 4)  # fewer tokens than frames: runs of frames
    red = reduce(make("uniform_pool", 4), feats, 2)
    assert_close(red.tokens, feats.view(1, 2, 18, 4).mean(2))
    assert red.frame_index.tolist() == [[0, 2]]


# ------------------------------------------------------------------------------------------ divprune
def _on_circle(degrees: list[float]) -> torch.Tensor:
    a = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], -1).float()


@pytest.mark.parametrize("layout", ["one frame", "one token a frame"])
def test_divprune_picks_the_farthest_point_set(layout):
    # angles 0, 10, 20, 120, 240: the token at 240 has the farthest nearest neighbour (120 deg) -> first;
    # then 20 (140 deg from 240), then 120 (100 deg from 20), then 0 (20 deg from 20).
    x = _on_circle([0, 10, 20, 120, 240]) * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0]])  # norms: irrelevant
    feats = x.view(1, 1, 5, 2) if layout == "one frame" else x.view(1, 5, 1, 2)
    m = make("divprune", 2)
    for n, want in [(1, [4]), (2, [2, 4]), (3, [2, 3, 4]), (4, [0, 2, 3, 4])]:
        red = reduce(m, feats, n)
        assert source_places(feats, red.tokens).tolist() == [want], n
        assert red.frame_index.tolist() == [[0] * n if layout == "one frame" else want]


def test_divprune_frame_scope_selects_inside_each_frame():
    frame = _on_circle([0, 10, 20, 120, 240])
    feats = torch.stack([frame, 2 * frame.roll(1, 0)]).view(1, 2, 5, 2)  # frame 1: the same directions, shifted
    red = reduce(make("divprune", 2, scope="frame"), feats, 4)
    assert source_places(feats, red.tokens).tolist() == [[2, 4, 5 + 0, 5 + 3]]  # 240 / 20 in each frame


# -------------------------------------------------------------------------------------------- dycoke
def test_dycoke_keeps_the_first_frame_and_drops_repeats():
    frame = torch.randn(1, 1, 16, 8)
    feats = frame.expand(1, 8, 16, 8).contiguous()  # 8 identical frames: two windows of 4
    m = make("dycoke", 8)
    red = reduce(m, feats, 32)  # ratio 0.25 with windows of 4: exactly the two windows' first frames
    assert red.frame_index.tolist() == [[0] * 16 + [4] * 16]
    assert_close(red.tokens, frame.expand(1, 2, 16, 8).reshape(1, 32, 8))
    assert red.aux["dropped_repeated_tokens"] == 6 * 16 and red.aux["dycoke_k"] == 1.0
    red = reduce(m, feats[:, :4], 16)  # one window: the first frame alone
    assert red.frame_index.tolist() == [[0] * 16]


def test_dycoke_keeps_what_changed():
    feats = torch.randn(1, 1, 16, 8).expand(1, 4, 16, 8).clone()
    feats[0, 1, 5] = torch.randn(8)  # frame 1 (compared with frame 0) changes at patch 5
    feats[0, 3, 9] = -feats[0, 3, 9]  # frame 3 (compared with frame 2) changes at patch 9
    red = reduce(make("dycoke", 8), feats, 16 + 3)  # one token for each of frames 1-3
    assert red.frame_index.tolist() == [[0] * 16 + [1, 2, 3]]
    assert_close(red.tokens[0, 16], feats[0, 1, 5])
    assert_close(red.tokens[0, 18], feats[0, 3, 9])
    assert abs(red.aux["dycoke_k"] - (1 - 3 / 48)) < 1e-9


def test_dycoke_below_the_first_frames_and_published_ratio():
    feats = torch.randn(1, 8, 16, 8)
    red = reduce(make("dycoke", 8), feats, 6)  # fewer than two first frames: 3 + 3 from frames 0 and 4
    assert red.frame_index.tolist() == [[0, 0, 0, 4, 4, 4]]
    sal = feats[0, 0].norm(dim=-1)
    assert set(source_places(feats, red.tokens)[0, :3].tolist()) == set(sal.topk(3).indices.tolist())
    cfg = make("dycoke", 8).cfg
    assert cfg.published_ratio == pytest.approx((1 + 3 * 0.3) / 4)
    feats = torch.randn(1, 8, 20, 8)  # (1 - K) * P = 6 tokens a frame: the published count, 2 * (20 + 3 * 6)
    m = make("dycoke", 8, ratio=cfg.published_ratio)
    assert m.count_tokens(8, 20) == 76
    red = reduce(m, feats, 76)
    assert red.aux["dycoke_k"] == pytest.approx(0.7)
    assert red.frame_index[0].bincount().tolist() == [20, 6, 6, 6, 20, 6, 6, 6]


# -------------------------------------------------------------------------------------------- random
def test_random_is_seeded_per_frame_and_deterministic():
    feats = torch.randn(2, 4, 16, 8)
    a = reduce(make("random", 8, seed=3), feats, 20)
    b = reduce(make("random", 8, seed=3), feats, 20)
    c = reduce(make("random", 8, seed=4), feats, 20)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert a.frame_index[0].bincount(minlength=4).tolist() == [5, 5, 5, 5]  # equal shares
    pa, pc = source_places(feats, a.tokens), source_places(feats, c.tokens)
    assert not torch.equal(pa, pc)
    odd = reduce(make("random", 8), feats, 6)  # 6 over 4 frames: shares 1 or 2, the extras spread
    assert sorted(odd.frame_index[0].bincount(minlength=4).tolist()) == [1, 1, 2, 2]


# ------------------------------------------------------------------------------------------- vidcom2
def test_vidcom2_gives_a_distinct_frame_a_larger_share():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 16, 32, generator=g)
    feats = (base + 0.01 * torch.randn(1, 6, 16, 32, generator=g)).clone()  # six near-repeats
    feats[0, 4] = torch.randn(16, 32, generator=g)  # frame 4: a new scene
    red = reduce(make("vidcom2", 32), feats, 24)
    counts = red.frame_index[0].bincount(minlength=6)
    assert counts.sum() == 24
    assert counts[4] > counts[[0, 1, 2, 3, 5]].max()
    # equal frames: equal shares
    red = reduce(make("vidcom2", 32), base.expand(1, 6, 16, 32).contiguous(), 24)
    assert red.frame_index[0].bincount(minlength=6).tolist() == [4] * 6


def test_vidcom2_keeps_the_least_typical_token_of_a_frame():
    g = torch.Generator().manual_seed(0)
    feats = (torch.ones(1, 2, 16, 8) + 0.05 * torch.randn(1, 2, 16, 8, generator=g)).clone()
    feats[0, 1, 11] = torch.randn(8, generator=g) * 3  # an outlier in frame 1
    red = reduce(make("vidcom2", 8, channel_ratio=1.0), feats, 2)  # every channel: the outlier stands out
    assert 16 + 11 in source_places(feats, red.tokens)[0].tolist()


def test_divprune_row_path_matches_the_matrix_path(monkeypatch):
    import harness.model.compressors.divprune as divprune

    feats = torch.randn(2, 4, 16, 8)
    m = make("divprune", 8)
    want = reduce(m, feats, 20)
    monkeypatch.setattr(divprune, "MATRIX_BYTES", {"cpu": 0})  # no matrix: the path of long videos
    monkeypatch.setattr(divprune, "BLOCK_BYTES", 2 * 64 * 4 * 5)  # several row blocks of 5
    got = reduce(m, feats, 20)
    assert torch.equal(got.frame_index, want.frame_index) and torch.equal(got.tokens, want.tokens)
