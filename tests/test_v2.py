"""MambaMia v2: GPA as a config, the Time-Axis Aggregator (mixing, delta scores, frame selection), the
Mamba-1/Mamba-2 switch, and the reference-number data."""

import itertools

import pytest
import torch

from harness.config import CompressorConfig, ConfigError, build
from harness.model.compressor import build_compressor
from harness.model.taa import cumulative_delta_mask, select_steps, uniform_steps


# ------------------------------------------------------------------------ selection on hand-made curves
def _sel(rows, sampling="delta", **kw):
    kept, n = select_steps(torch.tensor(rows, dtype=torch.float64), sampling, **kw)
    return kept.tolist(), n.tolist()


def test_cumulative_delta_exact_frames():
    # running sums 0.2 0.4 0.6 0.8 1.0 1.2 1.4 1.6 1.8 2.0: multiples of 0.5 reached at t = 2, 4 (exact), 7, 9
    assert _sel([[0.2] * 10], threshold=0.5) == ([[2, 4, 7, 9]], [4])
    # one spike carries over: sums 0.1 1.3 1.4 1.5 1.6 -> multiples 1 at t=1, (1.5 reached at t=3)
    assert _sel([[0.1, 1.2, 0.1, 0.1, 0.1]], threshold=0.5) == ([[1, 3]], [2])
    # nothing reaches the threshold: the highest-delta frame is still kept (at least one per video)
    assert _sel([[0.01, 0.03, 0.02]], threshold=1.0) == ([[1]], [0])


def test_batch_keeps_one_count_topped_up_by_highest_delta():
    rows = [[0.2] * 10, [0.1, 0.5, 0.0, 0.0, 0.3, 0.3, 0.05, 0.05, 0.4, 0.1]]
    # row 1 picks t = 1 (0.6), 5 (1.2), 8 (1.7); the batch needs 4, so its best unselected (t=4, 0.3) joins
    assert _sel(rows, threshold=0.5) == ([[2, 4, 7, 9], [1, 4, 5, 8]], [4, 3])


def test_max_frames_keeps_highest_delta_selected():
    row = [[0.6, 0.1, 0.9, 0.5, 0.7, 0.2]]  # sums 0.6 0.7 1.6 2.1 2.8 3.0 -> every step but t=1 reaches one
    assert _sel(row, threshold=0.5) == ([[0, 2, 3, 4, 5]], [5])
    assert _sel(row, threshold=0.5, max_frames=2) == ([[2, 4]], [5])


def test_relative_threshold_spends_a_fixed_budget():
    # total 2.0, k = round(0.5 * 8) = 4 -> threshold 0.5; sums 0.1 0.2 1.2 1.3 1.4 1.5 1.9 2.0
    row = [[0.1, 0.1, 1.0, 0.1, 0.1, 0.1, 0.4, 0.1]]
    # the spike crosses 0.5 and 1.0 at once (one frame), then 1.5 at t=5, 2.0 at t=7; top-up: t=6 (0.4)
    assert _sel(row, relative=True, keep_ratio=0.5) == ([[2, 5, 6, 7]], [3])
    flat = [[1.0] * 8, [3.0] * 8]  # a flat curve of any scale: every other frame
    assert _sel(flat, relative=True, keep_ratio=0.5) == ([[1, 3, 5, 7]] * 2, [4, 4])


def test_uniform_and_none():
    assert uniform_steps(8, 4) == [1, 3, 5, 7] and uniform_steps(10, 3) == [1, 5, 8] and uniform_steps(5, 5) == [
        0, 1, 2, 3, 4]
    assert _sel([[9.0, 0, 0, 0, 0, 0, 0, 0]], "uniform", keep_ratio=0.5) == ([[1, 3, 5, 7]], [4])
    assert _sel([[1.0] * 5], "uniform", keep_ratio=0.5) == ([[0, 2, 4]], [3])  # round half up: 2.5 -> 3
    assert _sel([[1.0] * 9], "uniform", keep_ratio=1.0, max_frames=3) == ([[1, 4, 7]], [3])
    assert _sel([[0.3, 0.1, 0.2]], "none") == ([[0, 1, 2]], [3])


def test_cumulative_mask_per_sample_thresholds():
    d = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    m = cumulative_delta_mask(d, torch.tensor([[1.0], [2.0]]))
    assert m.tolist() == [[True] * 4, [False, True, False, True]]


# ------------------------------------------------------------------------------ compressor configurations
D = 32
GPA = {"d_in": 24, "d_model": D, "d_out": 40, "pooling": "gpa", "spatial": {"period": 4, "n_layers": 1},
       "ssm": {"headdim": 8, "d_state": 8}}


def _cfg(**kw):
    base = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GPA.items()}
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


TAA_CASES = list(itertools.product(
    ["none", "uniform", "delta", "delta_rel"], [1, 2], ["slot", "flat"], ["bi_ssm", "uni_ssm"]))


@pytest.mark.parametrize("sampling,version,layout,block", TAA_CASES)
def test_taa_shapes_budgets_and_gradients(sampling, version, layout, block):
    torch.manual_seed(0)
    taa = {"enabled": True, "layout": layout, "sampling": sampling.split("_")[0], "relative": sampling == "delta_rel",
           "threshold": 0.05, "keep_ratio": 0.5}
    comp = build_compressor(_cfg(block=block, ssm={"version": version}, taa=taa))
    B, T, P = 3, 10, 12
    out = comp(torch.randn(B, T, P, 24))
    bound = comp.count_tokens(T, P)
    K = out.aux["kept"].shape[1]
    assert out.tokens.shape == (B, K * 3, 40) and out.n_tokens == K * 3 and out.frame_index.shape == (B, K * 3)
    if sampling == "delta":
        assert 1 <= K <= T and out.n_tokens <= bound == T * 3
    else:
        assert out.n_tokens == bound == {"none": 30, "uniform": 15, "delta_rel": 15}[sampling]
    assert out.aux["delta"].shape == (B, T) and bool((out.aux["delta"] > 0).all())
    kept = out.aux["kept"]
    assert bool((kept[:, 1:] > kept[:, :-1]).all()), "kept frames are distinct and in time order"
    assert torch.equal(out.frame_index, kept.repeat_interleave(3, dim=1))
    expected, _ = select_steps(out.aux["delta"], taa["sampling"], threshold=0.05, relative=taa["relative"],
                               keep_ratio=0.5)
    assert torch.equal(kept, expected)
    out.tokens.square().mean().backward()
    for name, p in comp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_taa_after_temporal_stage_reports_source_frames():
    comp = build_compressor(_cfg(temporal={"period": 2, "n_layers": 1},
                                 taa={"enabled": True, "sampling": "uniform", "keep_ratio": 0.5}))
    out = comp(torch.randn(2, 12, 8, 24))  # 6 steps of 2 frames -> 3 kept steps
    assert out.aux["step_frames"][0].tolist() == [0, 2, 4, 6, 8, 10]
    assert out.aux["kept"][0].tolist() == [2, 6, 10] and out.n_tokens == 3 * 2 == comp.count_tokens(12, 8)


def test_taa_budget_and_max_frames_compose():
    comp = build_compressor(_cfg(taa={"enabled": True, "sampling": "delta", "threshold": 1e-4, "max_frames": 4},
                                 budget=6))
    out = comp(torch.randn(1, 16, 8, 24))
    assert out.aux["kept"].shape[1] == 4 and out.n_tokens == 6  # 4 frames x 2 anchors, cut to the budget
    assert comp.count_tokens(16, 8) == 6
    with pytest.raises(ConfigError, match="above the 8 tokens"):
        build_compressor(_cfg(taa={"enabled": True, "sampling": "delta", "max_frames": 4}, budget=10)).count_tokens(
            16, 8)
    comp = build_compressor(_cfg(taa={"enabled": True, "sampling": "none"}, budget=10))
    assert comp(torch.randn(1, 16, 8, 24)).n_tokens == 10 == comp.count_tokens(16, 8)


def test_no_gpa_is_one_config_away():
    """The compression-layer ablation rows: BIMBA-like (mean-initialised queries, no GPA) -> +GPA -> +TAA."""
    no_gpa = build_compressor(_cfg(pooling="weighted", query_init="mean"))
    gpa = build_compressor(_cfg())
    gpa_taa = build_compressor(_cfg(taa={"enabled": True}))
    names = [{n for n, _ in m.named_parameters()} for m in (no_gpa, gpa, gpa_taa)]
    assert not any("weights" in n for n in names[0]) and any("pool.weights" in n for n in names[1])
    assert not any(n.startswith("taa.") for n in names[1]) and any(n.startswith("taa.") for n in names[2])
    x = torch.randn(2, 4, 16, 24)
    assert no_gpa(x).tokens.shape == gpa(x).tokens.shape == gpa_taa(x).tokens.shape == (2, 16, 40)


def test_taa_delta_is_the_mixers_step_size():
    torch.manual_seed(1)
    comp = build_compressor(_cfg(taa={"enabled": True, "layout": "slot"}))
    x = comp.spatial(comp.in_proj(torch.randn(1, 5, 8, 24)))  # (1, 5, 2, D)
    layer = comp.taa.layers[-1]
    seq = x.transpose(1, 2).reshape(2, 5, D)
    want = layer.fn.step_sizes(layer.norm(seq)).mean(0, keepdim=True)
    _, delta = comp.taa.mix(x)
    torch.testing.assert_close(delta, want)


@pytest.mark.parametrize(
    "bad,path,needle",
    [
        ({"taa": {"sampling": "topk"}}, "taa.sampling", "'uniform', 'delta', 'none'"),
        ({"taa": {"layout": "grid"}}, "taa.layout", "'slot', 'flat'"),
        ({"taa": {"n_layers": 0}}, "taa.n_layers", "must be >= 1"),
        ({"taa": {"max_frames": -1}}, "taa.max_frames", "must be >= 0"),
        ({"taa": {"keep_ratio": 0}}, "taa.keep_ratio", "(0, 1]"),
        ({"ssm": {"version": 3}}, "ssm.version", "allowed: 1, 2"),
    ],
)
def test_bad_v2_configs_name_the_key(bad, path, needle):
    with pytest.raises(ConfigError) as e:
        build(CompressorConfig, bad)
    assert e.value.path == path and needle in str(e.value)


def test_mamba2_headdim_error_names_the_key():
    with pytest.raises(ConfigError) as e:
        build_compressor(_cfg(d_model=36, ssm={"version": 2, "headdim": 16}))
    assert e.value.path == "model.compressor.ssm.headdim"
