"""Every compressor variant: token counts, gradients, determinism, bidirectionality, config errors."""

import itertools

import pytest
import torch

from harness.model.mambamia_config import BLOCK_TYPES, POOLING_TYPES, CompressorConfig
from harness.model.registry import build_compressor
from harness.schema import ConfigError, build

D = 32


def _cfg(**kw):
    base = {"d_in": 24, "d_model": D, "d_out": 40, "spatial": {"period": 4, "n_layers": 1}}
    base.update(kw)
    return base


@pytest.mark.parametrize("block,pooling", list(itertools.product(BLOCK_TYPES, POOLING_TYPES)))
def test_every_variant_shapes_and_gradients(block, pooling):
    torch.manual_seed(0)
    comp = build_compressor(_cfg(block=block, pooling=pooling, temporal={"period": 2, "n_layers": 1}))
    x = torch.randn(2, 6, 12, 24)
    out = comp(x)
    assert out.tokens.shape == (2, 3 * 3, 40) and out.n_tokens == 9 == comp.count_tokens(6, 12)
    assert out.frame_index.shape == (2, 9)
    assert out.frame_index[0].tolist() == [0, 0, 0, 2, 2, 2, 4, 4, 4]
    out.tokens.square().mean().backward()
    # With no mixing and query-only pooling the output is the learned queries alone: nothing upstream learns.
    upstream_dead = block == "identity" and pooling == "query"
    for name, p in comp.named_parameters():
        if upstream_dead and not name.startswith(("temporal.query", "out_")):
            assert p.grad is None or p.grad.abs().sum() == 0
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize(
    "T,P,sp,tp,budget,expected",
    [
        (8, 16, 4, 1, 0, 8 * 4),
        (8, 16, 4, 2, 0, 4 * 4),
        (5, 10, 4, 2, 0, 3 * 3),  # ragged periods: last period shorter, still one query
        (16, 64, 16, 4, 10, 10),  # budget met exactly
        (3, 7, 7, 3, 1, 1),
        (1, 1, 1, 1, 0, 1),
    ],
)
def test_token_counts(T, P, sp, tp, budget, expected):
    comp = build_compressor(_cfg(spatial={"period": sp, "n_layers": 1},
                                 temporal={"period": tp, "n_layers": 1 if tp > 1 else 0}, budget=budget))
    out = comp(torch.randn(1, T, P, 24))
    assert out.n_tokens == expected == out.tokens.shape[1] == comp.count_tokens(T, P)
    assert bool((out.frame_index[:, 1:] >= out.frame_index[:, :-1]).all()), "tokens stay in time order"


def test_vanilla_keeps_every_token():
    comp = build_compressor(_cfg(enabled=False))
    out = comp(torch.randn(2, 3, 5, 24))
    assert out.tokens.shape == (2, 15, 40)
    assert out.frame_index[0].tolist() == [t for t in range(3) for _ in range(5)]


def test_determinism_under_seed():
    def run():
        torch.manual_seed(123)
        comp = build_compressor(_cfg(block="bi_ssm", pooling="attention"))
        torch.manual_seed(7)
        return comp(torch.randn(2, 4, 8, 24)).tokens

    assert torch.equal(run(), run())


def _dependency(block: str) -> tuple[float, float]:
    """Gradient of the first output token w.r.t. the last and the first input frame."""
    torch.manual_seed(0)
    comp = build_compressor(_cfg(block=block, spatial={"period": 4, "n_layers": 2}))
    x = torch.randn(1, 4, 8, 24, requires_grad=True)
    comp(x).tokens[0, 0].sum().backward()
    return x.grad[0, -1].abs().sum().item(), x.grad[0, 0].abs().sum().item()


def test_bidirectional_first_token_sees_last_frame():
    last, first = _dependency("bi_ssm")
    assert first > 0 and last > 0


def test_unidirectional_first_token_is_blind_to_the_future():
    last, first = _dependency("uni_ssm")
    assert first > 0 and last == 0


def test_gating_is_its_own_switch():
    on = build_compressor(_cfg(gated=True))
    off = build_compressor(_cfg(gated=False))
    assert any("gate" in n for n, _ in on.named_parameters())
    assert not any("gate" in n for n, _ in off.named_parameters())


def _frame_swap_equivariant(**kw) -> bool:
    """Does swapping the two input frames just swap the two frames' output tokens?"""
    torch.manual_seed(0)
    comp = build_compressor(_cfg(spatial={"period": 4, "n_layers": 2}, **kw))
    x = torch.randn(1, 2, 8, 24)
    a = comp(x).tokens.view(2, 2, -1)
    b = comp(x.flip(1)).tokens.view(2, 2, -1)
    return torch.allclose(a, b.flip(0), atol=1e-5)


def test_transformer_without_positions_cannot_tell_frame_order():
    assert _frame_swap_equivariant(block="transformer", pos_embed="none")


@pytest.mark.parametrize("kw", [{"block": "transformer"}, {"block": "transformer", "pos_embed": "sincos"},
                                {"block": "bi_ssm"}, {"block": "identity", "pos_embed": "sincos"}])
def test_positions_or_a_scan_make_the_output_order_aware(kw):
    # pos_embed: auto gives the Transformer sin-cos positions; an SSM is order-aware by its scan
    assert not _frame_swap_equivariant(**kw)


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_the_position_code_meets_the_content_at_its_scale(scale):
    """pos_norm: whatever the encoder's feature scale, the tokens entering the mixer are unit-RMS content
    plus the code, so neither swamps the other (without it, small features drown under the code)."""
    seen = {}
    for pos_norm in (True, False):
        torch.manual_seed(0)
        comp = build_compressor(_cfg(block="transformer", pos_norm=pos_norm))
        comp.spatial.mixer.register_forward_hook(lambda m, i, o, k=pos_norm: seen.update({k: i[0]}))
        comp(torch.randn(2, 3, 8, 24) * scale)
    L = seen[True].shape[1]
    code = comp.spatial._positions(L, D, torch.device("cpu"))
    content = (seen[True] - code).pow(2).mean(-1).sqrt()
    assert torch.allclose(content, torch.ones_like(content), atol=0.02)  # LayerNorm eps on the tiny queries
    raw = (seen[False] - code).pow(2).mean(-1).sqrt()
    assert not torch.allclose(raw, torch.ones_like(raw), atol=0.2)  # the old path keeps in_proj's scale


def test_pos_embed_auto_resolves_per_block():
    assert build(CompressorConfig, {"block": "transformer"}).uses_pos_embed
    assert not build(CompressorConfig, {"block": "bi_ssm"}).uses_pos_embed
    assert build(CompressorConfig, {"block": "bi_ssm", "pos_embed": "sincos"}).uses_pos_embed
    assert not build(CompressorConfig, {"block": "transformer", "pos_embed": "none"}).uses_pos_embed


@pytest.mark.parametrize(
    "cfg,T,P,path,needle",
    [
        (_cfg(spatial={"period": 32}), 2, 16, "model.compressor.spatial.period", "larger than the sequence"),
        (_cfg(temporal={"period": 8, "n_layers": 1}), 4, 16, "model.compressor.temporal.period", "larger"),
        (_cfg(budget=100), 2, 16, "model.compressor.budget", "above the 8 tokens"),
    ],
)
def test_impossible_shapes_are_named(cfg, T, P, path, needle):
    comp = build_compressor(cfg)
    with pytest.raises(ConfigError) as e:
        comp(torch.randn(1, T, P, 24))
    assert e.value.path == path and needle in str(e.value)


@pytest.mark.parametrize(
    "bad,path,needle",
    [
        ({"block": "lstm"}, "model.compressor.block", "'bi_ssm', 'uni_ssm', 'transformer', 'conv', 'identity'"),
        ({"pooling": "avg"}, "model.compressor.pooling", "'weighted', 'mean', 'max', 'query', 'attention'"),
        ({"blok": "bi_ssm"}, "model.compressor.blok", "did you mean 'block'"),
        ({"spatial": {"period": 0}}, "model.compressor.spatial.period", "must be >= 1"),
        ({"d_model": "64"}, "model.compressor.d_model", "expected an integer"),
        ({"pos_embed": "rope"}, "model.compressor.pos_embed", "'auto', 'none', 'sincos'"),
        ({"block": "transformer", "d_model": 30, "n_heads": 4}, "model.compressor.n_heads", "not divisible"),
    ],
)
def test_bad_configs_name_field_and_allowed_values(bad, path, needle):
    with pytest.raises(ConfigError) as e:
        build_compressor(_cfg(**bad))
    assert e.value.path == path
    assert needle in str(e.value)


def test_build_from_dict_round_trips():
    cfg = build(CompressorConfig, {"block": "transformer", "pooling": "mean", "budget": 8})
    assert cfg.block == "transformer" and cfg.spatial.period == 16
    assert build_compressor(cfg).cfg is cfg


@pytest.mark.parametrize("pooling", POOLING_TYPES)
def test_masked_pooling_runs_under_bf16_autocast(pooling):
    """Mask fills must fit the autocast dtype (a float32 minimum overflows bfloat16)."""
    comp = build_compressor(_cfg(block="conv", pooling=pooling, spatial={"period": 5, "n_layers": 1}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = comp(torch.randn(1, 2, 12, 24))  # ragged: periods of 5, 5, 2
    assert torch.isfinite(out.tokens.float()).all()


def test_partial_stage_override_keeps_the_fields_own_defaults():
    cfg = build(CompressorConfig, {"spatial": {"period": 8}})
    assert cfg.spatial.period == 8 and cfg.spatial.n_layers == CompressorConfig().spatial.n_layers == 2
