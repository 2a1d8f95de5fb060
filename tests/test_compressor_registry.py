"""The compressor registry (issue 28): names, presets, the contract every training-free reducer keeps, token
budgets met at plan time, the schema migration, and evaluation-only runs ordered after their parents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.config import ConfigError, RunConfig, build, to_dict
from harness.data.synthetic import SuiteSpec, make_suite
from harness.identity import migrate_config
from harness.model.compressors.base import Reduced, ReducerCompressor, ReducerConfig, split_budget
from harness.model.registry import (
    COMPRESSORS,
    build_compressor,
    build_config,
    compressor_names,
    get_entry,
    register_compressor,
)
from harness.store import ResultsStore
from harness.sweep import run_sweep
from harness.sweep.plan import plan_study
from harness.sweep.spec import SpecError, load_spec

REDUCERS = sorted(n for n in compressor_names() if COMPRESSORS[n].training_free)


def test_the_field_s_reducers_are_registered():
    assert {"uniform_pool", "random", "divprune", "dycoke", "visionzip", "fastvid", "vidcom2"} <= set(REDUCERS)
    assert {"mambamia", "proposed", "self_attention", "bimba", "pooling", "vanilla"} <= set(compressor_names())


def test_an_unknown_name_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"model\.compressor\.name: unknown compressor 'fastvd' \(did you mean "
                                          r"'fastvid'\?\)"):
        build(RunConfig, {"model": {"compressor": {"name": "fastvd"}}})
    with pytest.raises(ConfigError, match=r"model\.compressor\.block: unknown key"):  # an entry's config is its own
        build(RunConfig, {"model": {"compressor": {"name": "fastvid", "block": "bi_ssm"}}})


def test_the_registry_lists_itself(capsys):
    from harness.model.list_compressors import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "fastvid         training-free  FastVID" in out
    assert "proposed        trained        preset of mambamia" in out
    assert main(["vidcom2"]) == 0 and "  ratio: 0.25" in capsys.readouterr().out
    assert main(["fastvd"]) == 2 and "did you mean 'fastvid'" in capsys.readouterr().err


def test_presets_are_the_five_way_designs_and_explicit_fields_win():
    p = build_config({"name": "proposed", "d_model": 32})
    assert (p.block, p.pooling, p.taa.enabled, p.taa.sampling, p.d_model) == ("bi_ssm", "gpa", True, "delta", 32)
    assert build_config({"name": "pooling", "temporal": {"period": 4}}).temporal.period == 4
    assert not build_config({"name": "vanilla"}).enabled and build_config({"name": "vanilla"}).tokenwise
    assert get_entry("proposed").base == "mambamia" and not get_entry("proposed").training_free


def test_a_new_compressor_plugs_in_without_a_core_edit():
    from dataclasses import dataclass

    @dataclass
    class FirstFrameConfig(ReducerConfig):
        pass

    @register_compressor("test_first_tokens", FirstFrameConfig, training_free=True)
    class FirstTokens(ReducerCompressor):
        """Keep the first n tokens (a test entry)."""

        def reduce(self, feats, n, saliency):
            B, T, P, D = feats.shape
            idx = torch.arange(n).expand(B, n)
            return Reduced(feats.reshape(B, T * P, D)[:, :n], idx // P)

    try:
        cfg = build(RunConfig, {"model": {"visual_tokens": 24, "compressor": {"name": "test_first_tokens"}},
                                "data": {"n_frames": 4}})
        assert cfg.model.compressor.count_tokens(4, 64) == 24
        out = build_compressor(cfg.model.compressor)(torch.randn(2, 4, 64, 64))
        assert out.tokens.shape == (2, 24, 64) and out.frame_index.max() == 0
    finally:
        COMPRESSORS.pop("test_first_tokens")


@pytest.mark.parametrize("name", REDUCERS)
def test_every_reducer_returns_exactly_its_budget_in_time_order_deterministically(name):
    g = torch.Generator().manual_seed(0)
    for T, P, n in [(8, 64, 32), (8, 64, 1), (3, 16, 48), (1, 16, 5), (5, 36, 17)]:
        m = build_compressor({"name": name, "d_in": 16, "d_model": 8, "d_out": 8, "ratio": n / (T * P)})
        feats = torch.randn(2, T, P, 16, generator=g)
        a, b = m(feats), m(feats)
        assert a.tokens.shape == (2, n, 8) and a.n_tokens == n, (name, T, P, n)
        assert a.frame_index.dtype == torch.long and a.frame_index.min() >= 0 and a.frame_index.max() < T
        assert (a.frame_index.diff(dim=1) >= 0).all(), f"{name}: tokens out of time order"
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.frame_index, b.frame_index)
        assert a.aux["saliency"] == "l2_norm"
    same = torch.randn(1, 1, 16, 16, generator=g).expand(2, 6, 16, 16).contiguous()  # identical frames
    out = build_compressor({"name": name, "d_in": 16, "d_model": 8, "d_out": 8, "ratio": 0.25})(same)
    assert out.tokens.shape == (2, 24, 8) and torch.isfinite(out.tokens).all()
    zero = build_compressor({"name": name, "d_in": 16, "d_model": 8, "d_out": 8, "ratio": 0.5})(
        torch.zeros(1, 4, 16, 16))
    assert zero.tokens.shape == (1, 32, 8) and torch.isfinite(zero.tokens).all()


def test_reducers_load_the_vanilla_compressor_s_weights():
    vanilla = build_compressor({"name": "vanilla", "d_in": 16, "d_model": 8, "d_out": 8})
    for name in REDUCERS:
        red = build_compressor({"name": name, "d_in": 16, "d_model": 8, "d_out": 8})
        red.load_state_dict(vanilla.state_dict())  # strict: the same token-wise maps


def test_split_budget_is_exact_within_caps():
    caps = torch.tensor([[4, 4, 4], [1, 10, 2]])
    out = split_budget(7, caps, torch.tensor([[1.0, 1.0, 10.0], [5.0, 1.0, 1.0]]))
    assert out.sum(-1).tolist() == [7, 7] and (out <= caps).all() and out[0, 2] == 4 and out[1, 0] == 1
    assert split_budget(6, torch.tensor([2, 2, 2])).tolist() == [2, 2, 2]


# ------------------------------------------------------------------------------------------ budgets
def _run(**model) -> RunConfig:
    return build(RunConfig, {"model": model, "data": {"n_frames": 8}})


def test_trained_compressors_meet_a_budget_by_period_or_cut():
    c = _run(visual_tokens=16, compressor={"name": "mambamia_v2"}).model.compressor
    assert c.spatial.period == 32 and c.count_tokens(8, 64) == 16
    c = _run(visual_tokens=8, compressor={"name": "pooling"}).model.compressor  # temporal pairs: 4 steps
    assert c.temporal.period == 2 and c.spatial.period == 32 and c.count_tokens(8, 64) == 8
    c = _run(visual_tokens=20, budget_by="cut", compressor={"name": "mambamia_v2"}).model.compressor
    assert c.budget == 20 and c.count_tokens(8, 64) == 20
    r = _run(visual_tokens=32, compressor={"name": "random"})
    assert r.model.compressor.ratio == 32 / 512 and r.model.compressor.count_tokens(8, 64) == 32
    again = build(RunConfig, to_dict(r))  # a resolved config rebuilds to itself (a fixed point)
    assert to_dict(again) == to_dict(r)


@pytest.mark.parametrize("model,match", [
    ({"visual_tokens": 12, "compressor": {"name": "mambamia_v2"}}, "not a multiple of 8"),
    ({"visual_tokens": 600, "compressor": {"name": "random"}}, "larger than the input: 8 frames x 64"),
    ({"visual_tokens": -1, "compressor": {"name": "random"}}, "must be > 0"),
    ({"visual_tokens": 32, "compressor": {"name": "vanilla"}}, "does not compress"),
    ({"visual_tokens": 32, "compressor": {"name": "proposed"}}, "data-dependent number of frames"),
])
def test_a_budget_that_cannot_be_met_is_a_clear_error(model, match):
    with pytest.raises(ConfigError, match=match) as e:
        _run(**model)
    assert e.value.path == "model.visual_tokens"


def test_schema_2_configs_migrate_to_the_mambamia_entry():
    old = to_dict(build(RunConfig, {}))
    del old["model"]["compressor"]["name"], old["model"]["visual_tokens"], old["model"]["budget_by"]
    del old["eval"]["parent"]
    cfg = build(RunConfig, migrate_config(old, 2))
    assert cfg.model.compressor.name == "mambamia" and cfg.model.visual_tokens == 0 and cfg.eval.parent == ""
    assert to_dict(cfg) == to_dict(build(RunConfig, {}))


# ------------------------------------------------------------------------------------------ studies
@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "mia"
    make_suite(out, SuiteSpec(n_train=4, n_val=0, n_test=4, families=["colour"], frames_long=16, frames_dense=16),
               workers=1, progress=False)
    return out


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_the_plan_shows_each_run_s_tokens_and_names_a_variant_that_cannot_meet_its_budget(tmp_path, suite):
    spec = _spec(tmp_path, f"""
study: b
base: {{data: {{suite: {suite}, n_frames: 8}}, model: {{compressor: {{d_model: 32, d_out: 32}}}}}}
compressors: {{bi: {{name: mambamia_v2, spatial: {{n_layers: 1}}}}}}
grid:
  model.visual_tokens: [16, 32]
  model.compressor.name: [bi, random, fastvid]
labels: {{model.visual_tokens: budget, model.compressor.name: compressor}}
""")
    plan = plan_study(load_spec(spec))
    assert {(r.variant["budget"], r.variant["compressor"], r.tokens) for r in plan.runs} == {
        (b, c, b) for b in (16, 32) for c in ("bi", "random", "fastvid")}
    assert "budget=16, compressor=bi" in plan.describe() and "      16  new" in plan.describe()
    with pytest.raises(SpecError, match=r"variant budget=12, compressor=bi: model\.visual_tokens: .*multiple of 8"):
        plan_study(load_spec(spec, ["grid.model.visual_tokens=[12]"]))
    with pytest.raises(SpecError, match=r"grid\.model\.visual_tokens\[0\]: a token budget must be a positive"):
        load_spec(spec, ["grid.model.visual_tokens=[0]"])
    with pytest.raises(SpecError, match=r"compressors\.random: 'random' is a registry name"):
        load_spec(spec, ["compressors.random={name: mambamia}"])


PARENT_FAILS = '''
def body(cfg, run_dir, parent_dir=None):
    """Trains nothing: the parent (no eval.parent) fails, a child would score (it must never run)."""
    if not cfg.eval.parent:
        raise RuntimeError("the parent's training diverged")
    (run_dir / "child_ran").write_text("yes")
    return {"metrics": [{"task": "mia_long", "metric": "acc", "value": 0.5, "n": 4}]}
'''


def test_an_evaluation_only_child_of_a_failed_parent_is_failed_and_never_run(tmp_path, suite, monkeypatch):
    (tmp_path / "parentbody.py").write_text(PARENT_FAILS)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec(tmp_path, f"""
study: ev
base: {{data: {{suite: {suite}, n_frames: 8}}, eval: {{parent: vanilla}}, model: {{compressor: {{name: random}}}}}}
grid: {{model.visual_tokens: [16, 32], model.compressor.name: [random, divprune]}}
labels: {{model.visual_tokens: budget, model.compressor.name: compressor}}
""")
    plan = plan_study(load_spec(spec))
    parents = [r for r in plan.runs if not r.parent]
    children = [r for r in plan.runs if r.parent]
    assert len(parents) == 1 and len(children) == 4, "one vanilla parent for every budget and reducer"
    assert plan.runs[0] is parents[0] and all(c.parent == parents[0].run_id for c in children)
    assert all(c.identity["parent"] == parents[0].run_id for c in children)
    assert parents[0].variant == {"budget": 512, "compressor": "vanilla"} and parents[0].tokens == 512
    lines: list[str] = []
    res = run_sweep(spec, results=tmp_path / "res", executor="debug", progress=False, log=lines.append,
                    body="parentbody:body", report=False)
    store = ResultsStore(tmp_path / "res" / "store")
    assert store.read_run(parents[0].run_id)["status"] == "failed"
    for c in children:
        rec = store.read_run(c.run_id)
        assert rec["status"] == "failed" and rec["parent_failed"] == parents[0].run_id
        assert f"parent run {parents[0].run_id} failed: RuntimeError: the parent's training diverged" in rec["reason"]
        assert not (tmp_path / "res" / "runs" / c.run_id / "child_ran").exists()
    assert res.exit_code != 0
