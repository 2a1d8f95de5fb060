"""MambaMia v2: GPA as a config, the Time-Axis Aggregator (mixing, delta scores, frame selection), the
Mamba-1/Mamba-2 switch, and the reference-number data."""

import itertools

import pytest
import torch

from harness.identity import current_versions
from harness.model.mambamia_config import CompressorConfig
from harness.model.registry import build_compressor
from harness.model.taa import cumulative_delta_mask, select_steps, uniform_steps
from harness.schema import ConfigError, build


# ------------------------------------------------------------------------ selection on hand-made curves
def _sel(rows, sampling="delta", **kw):
    kept, n = select_steps(torch.tensor(rows, dtype=torch.float64), sampling, **kw)
    return kept.tolist(), n.tolist()

CURRENT = {**current_versions(), "dataset": "synthetic:test"}  # records of the current code


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


def test_gpa_gate_switch():
    """``gpa_gate: false`` drops the sigmoid gate: the output is the fixed mean of query and pooled."""
    from harness.model.pooling import build_pooling

    torch.manual_seed(0)
    q, x = torch.randn(2, 1, 3, D), torch.randn(2, 1, 3, 4, D)
    mask = torch.ones(3, 4, dtype=torch.bool)
    gated = build_pooling(build(CompressorConfig, {**GPA, "d_in": D, "d_out": D}), 4)
    plain = build_pooling(build(CompressorConfig, {**GPA, "d_in": D, "d_out": D, "gpa_gate": False}), 4)
    assert plain.gate is None and isinstance(gated.gate, torch.nn.Linear)
    plain.weights.load_state_dict(gated.weights.state_dict())
    w = gated.weights(q).softmax(-1)
    pooled = (w.unsqueeze(-1) * x).sum(-2)
    torch.testing.assert_close(plain(q, x, mask), 0.5 * (q + pooled))
    g = torch.sigmoid(gated.gate(q))
    torch.testing.assert_close(gated(q, x, mask), g * q + (1 - g) * pooled)
    assert build_compressor(_cfg(gpa_gate=False))(torch.randn(2, 4, 16, 24)).tokens.shape == (2, 16, 40)


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


# ------------------------------------------------------------------------------------ report kinds
COMPRESSORS = [{"proposed": {"taa": True}}, {"self_attention": {"block": "transformer"}},
               {"bimba": {"pooling": "query"}}, {"pooling": {"block": "identity"}}, {"vanilla": {"compress": False}}]
FIVE = [  # compress, block, pooling, taa; accuracy, latency at 8 frames
    (True, "bi_ssm", "gpa", True, 0.70, 10.0), (True, "transformer", "gpa", False, 0.60, 12.0),
    (True, "bi_ssm", "query", False, 0.62, 11.0), (True, "identity", "mean", False, 0.50, 5.0),
    (False, "bi_ssm", "gpa", False, 0.58, 40.0)]


def _metrics(acc):
    return [{"task": t, "metric": "acc", "value": acc, "n": 10} for t in ("mia_long", "mia_dense")]


def make_five_way_store(root):
    from harness.store import ResultsStore

    store = ResultsStore(root)
    entries = []
    for frames in (8, 16, 32):
        for comp, block, pool, taa, acc, lat in FIVE:
            for seed in (0, 1):
                variant = {"frames": frames, "compress": comp, "block": block, "pooling": pool, "taa": taa}
                rid = f"fw-{frames}-{block}-{pool}-{comp}-{taa}-{seed}"
                entries.append({"run_id": rid, "seed": seed, "variant": variant, "label": rid})
                rec = {"run_id": rid, "seed": seed, "status": "done", "identity": CURRENT,
                       "finished": "2026-11-24T10:00:00",
                       "config": {"eval": {"tasks": ["mia_long", "mia_dense"]}, "data": {"n_frames": frames}},
                       "metrics": _metrics(acc + 0.01 * seed), "tokens": {"llm_visual": frames * 8},
                       "extra": {"ttft_ms": lat * frames / 8, "peak_mem_mb": 100.0 * frames * (4 if not comp else 1),
                                 "train_train_time_s": 60.0 * frames}}
                if taa and frames == 16 and seed == 0:
                    rec["extra"]["taa_trace"] = {"video": "v7", "sampling": "delta", "threshold": 0.5,
                                                 "step_frames": list(range(10)), "delta": [0.2] * 10,
                                                 "kept": [2, 4, 7, 9], "n_selected": 4}
                if not comp and frames == 32:
                    rec.update(status="failed", reason="torch.OutOfMemoryError: CUDA out of memory", metrics=[],
                               extra={})
                store.write_run(rec)
    store.write_study("five_way", entries, {
        "description": "five", "axes": {"frames": "data.n_frames", "compress": "model.compressor.enabled",
                                        "block": "model.compressor.block", "pooling": "model.compressor.pooling",
                                        "taa": "model.compressor.taa.enabled"},
        "report": {"x": "frames", "plugins": ["harness.report.figures_v2"], "compressors": COMPRESSORS,
                   "figures": ["five_way_panels", "cost_bars", "delta_curve"]}})
    return store


def test_five_way_report_kinds(tmp_path):
    from harness.report import report_study
    from harness.report.data import load_study
    from harness.report.figures_v2 import compressor_name, series, variant_oom

    store = make_five_way_store(tmp_path / "store")
    rep = report_study(store, "five_way", tmp_path / "out", progress=False)
    kinds = {a.kind: a for a in rep.artifacts}
    for k in ("figure:five_way_panels", "figure:cost_bars", "figure:delta_curve"):
        assert k in kinds and all(p.stat().st_size > 1000 for p in kinds[k].files), k
    assert "Out of memory: vanilla at frames=32" in kinds["figure:five_way_panels"].caption
    assert "Time to first token" in kinds["figure:five_way_panels"].caption
    assert "[2, 4, 7, 9]" in kinds["figure:delta_curve"].caption and "v7" in kinds["figure:delta_curve"].caption
    assert "Paper: MambaMia (proposed)" in kinds["figure:cost_bars"].caption
    study = load_study(store, "five_way")
    assert list(series(study)) == ["proposed", "self_attention", "bimba", "pooling", "vanilla"]
    oom = [compressor_name(study, v) + f"@{v.values['frames']}" for v in study.variants if variant_oom(study, v)]
    assert oom == ["vanilla@32"]


def make_layer_store(root, avg):
    """The compression-layer study with reproduced mean scores ``avg`` (per paper row id), 3 seeds."""
    from harness.store import ResultsStore

    rows = {"no_gpa": ("query", False, 2, "bi_ssm"), "gpa": ("gpa", False, 2, "bi_ssm"),
            "gpa_taa": ("gpa", True, 2, "bi_ssm"), "gpa_taa_mamba1": ("gpa", True, 1, "bi_ssm"),
            "gpa_taa_uni": ("gpa", True, 2, "uni_ssm")}
    store = ResultsStore(root)
    entries = []
    for rid_, (pool, taa, ssm, block) in rows.items():
        for seed in (0, 1, 2):
            rid = f"cl-{rid_}-{seed}"
            variant = {"pooling": pool, "taa": taa, "ssm": ssm, "block": block}
            entries.append({"run_id": rid, "seed": seed, "variant": variant, "label": rid})
            store.write_run({"run_id": rid, "seed": seed, "status": "done", "identity": CURRENT,
                             "finished": "2026-11-24T10:00:00",
                             "config": {"eval": {"tasks": ["mia_long", "mia_dense"]}, "data": {"n_frames": 16},
                                        "model": {"llm": {"preset": "tiny", "arch": "qwen2", "hidden_size": 64,
                                                          "n_layers": 2}, "encoder": {"name": "tiny"}}},
                             "metrics": _metrics(avg[rid_] + 0.002 * seed * (1 if rid_ == "gpa" else -1)),
                             "tokens": {"llm_visual": 128}})
    store.write_study("v2_compression_layer", entries, {
        "axes": {"pooling": "model.compressor.pooling", "taa": "model.compressor.taa.enabled",
                 "ssm": "model.compressor.ssm.version", "block": "model.compressor.block"},
        "report": {"x": "pooling", "plugins": ["harness.report.figures_v2"], "reference": "compression_layer",
                   "figures": []}})
    return store


def test_reported_vs_reproduced_table_and_claims(tmp_path):
    from harness.report import report_study

    avg = {"no_gpa": 0.40, "gpa": 0.50, "gpa_taa": 0.48, "gpa_taa_mamba1": 0.47, "gpa_taa_uni": 0.45}
    store = make_layer_store(tmp_path / "store", avg)
    rep = report_study(store, "v2_compression_layer", tmp_path / "out", progress=False)
    md = (tmp_path / "out" / "table_reported_vs_reproduced.md").read_text()
    assert "no GPA (BIMBA-like average-pooled queries), Mamba-2" in md and "frames 64" in md and "frames 16" in md
    csv_text = (tmp_path / "out" / "table_reported_vs_reproduced.csv").read_text()
    gpa_line = next(ln for ln in csv_text.splitlines() if ln.startswith('"+GPA, Mamba-2"') or ln.startswith("+GPA, M"))
    assert "6.78" in gpa_line and "52.22" in gpa_line  # paper: 52.22 - 45.44
    assert ",10.4000,0.99" in gpa_line  # reproduced, paired per seed: (50.0, 50.2, 50.4) - (40.0, 39.8, 39.6)
    assert "claim gpa_helps (+GPA beats BIMBA-like average-pooled queries): paper +6.78; reproduced +10.40" in md
    assert "same direction, CI excludes 0" in md
    assert "claim taa_helps" in md and "opposite direction" in md  # reproduced 48 < 50
    assert any(a.kind == "table:reported_vs_reproduced" for a in rep.artifacts)


def test_reference_file_validates_and_names_keys(tmp_path):
    from harness.reference_numbers import ReferenceError, load_reference, main

    ref = load_reference()
    t = ref.table("compression_layer")
    assert t.row("gpa").values["avg"] == 52.22 and t.protocol["frames"] == 64 and t.baseline == "no_gpa"
    assert ref.table("secondary_sampling").row("delta").values == {"lvbench": 44.61, "mlvu": 67.99,
                                                                     "videomme": 58.26, "avg": 56.95}
    assert ref.table("cost").row("vanilla").oom == ["peak_mem_gib_256f"]
    assert [r.id for r in t.rows_for_study("v2_compression_layer")] == [r.id for r in t.rows]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables:\n  t:\n    protocol: {frames: 8}\n    columns: {a: A}\n"
                   "    rows:\n      - {id: r, values: {b: 1.0}}\n")
    with pytest.raises(ReferenceError, match=r"bad.yaml: tables.t.rows\[0\].values.b: not a column"):
        load_reference(bad)
    assert main(["cost"]) == 0


# ------------------------------------------------------------------------- end to end: the five-way study
@pytest.mark.slow
def test_five_way_lmm_study_end_to_end(tmp_path):
    """``python -m harness.sweep ablations/five_way_lmm.yaml`` on a small offline suite, shrunk by --set: every
    compressor trains and scores, and the report draws the three panels and the cost bars."""
    import subprocess
    import sys
    from pathlib import Path

    from harness.data.synthetic import SuiteSpec, make_suite
    from harness.store import ResultsStore

    root = Path(__file__).resolve().parents[1]
    suite = tmp_path / "suite"
    make_suite(suite, SuiteSpec(n_train=16, n_val=0, n_test=12, frames_long=16, frames_dense=16), workers=1,
               progress=False)
    res = tmp_path / "res"
    sets = ["seeds=[0]", "grid.data.n_frames=[8]", "train.steps=2", "train.batch_size=4", "train.warmup_steps=1",
            "train.checkpoint_every=2", "train.log_every=1", "eval.limit=2", f"data.suite={suite}",
            f"data.cache_dir={tmp_path / 'cache'}"]
    cmd = [sys.executable, "-m", "harness.sweep", "ablations/five_way_lmm.yaml", "--results", str(res), "--no-progress",
           "--max-parallel", "2"] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    store = ResultsStore(res / "store")
    index = store.read_study("five_way_lmm")
    assert len(index["runs"]) == 5
    tokens = {}
    for e in index["runs"]:
        rec = store.read_run(e["run_id"])
        assert rec["status"] == "done", rec.get("reason")
        assert {"mia_long", "mia_dense"} <= {m["task"] for m in rec["metrics"]}
        v = e["variant"]
        tokens[(v["frames"], v["block"], v["pooling"], v["compress"], v["taa"])] = rec["tokens"]["llm_visual"]
    # 64 patches per frame, one anchor per row of 8: 8 per frame; the TAA keeps half the frames, pooling
    # averages frame pairs; vanilla keeps every patch
    assert tokens[(8, "bi_ssm", "gpa", True, True)] == 4 * 8
    assert tokens[(8, "transformer", "gpa", True, False)] == tokens[(8, "bi_ssm", "query", True, False)] == 8 * 8
    assert tokens[(8, "identity", "mean", True, False)] == 4 * 8
    assert tokens[(8, "bi_ssm", "gpa", False, False)] == 8 * 64
    rep = res / "reports" / "five_way_lmm"
    for stem in ("fig_five_way_panels", "fig_cost_bars"):
        assert (rep / f"{stem}.png").stat().st_size > 1000 and (rep / f"{stem}.pdf").is_file(), stem
    index_md = (rep / "index.md").read_text()
    assert "fig_five_way_panels" in index_md and "fig_cost_bars" in index_md
    table = (rep / "table_main.md").read_text()
    assert sum(ln.startswith("| 8 |") for ln in table.splitlines()) == 5, table


@pytest.mark.slow
def test_five_way_probe_study_end_to_end(tmp_path):
    """``python -m harness.sweep ablations/five_way.yaml`` (probe protocol) shrunk by --set: the five
    compressors train and score, the TAA's token count is what it kept, each run records its batch-1
    compressor latency, and the report draws the panels and the compressor pairs table."""
    import subprocess
    import sys
    from pathlib import Path

    from harness.store import ResultsStore

    root = Path(__file__).resolve().parents[1]
    res = tmp_path / "res"
    sets = ["seeds=[0]", "grid.data.n_frames=[8]", "train.steps=3", "train.warmup_steps=1",
            f"data.suite={tmp_path / 'suite'}", "data.synthetic.frames_dense=16", "data.synthetic.n_train=24",
            "data.synthetic.n_test=12", f"data.cache_dir={tmp_path / 'cache'}"]
    cmd = [sys.executable, "-m", "harness.sweep", "ablations/five_way.yaml", "--results", str(res), "--no-progress",
           "--max-parallel", "2"] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    store = ResultsStore(res / "store")
    tokens = {}
    for e in store.read_study("five_way")["runs"]:
        rec = store.read_run(e["run_id"])
        assert rec["status"] == "done", rec.get("reason")
        assert rec["extra"]["protocol"] == "probe" and rec["extra"]["compressor_ms"] > 0
        v = e["variant"]
        tokens[(v["block"], v["pooling"], v["compressed"], v["taa"])] = rec["tokens"]["llm_visual"]
    assert 0 < tokens[("bi_ssm", "gpa", True, True)] < 8 * 8  # the TAA kept some of the 8 frames' 8 anchors
    assert tokens[("transformer", "gpa", True, False)] == tokens[("bi_ssm", "query", True, False)] == 8 * 8
    assert tokens[("identity", "mean", True, False)] == 4 * 8 and tokens[("bi_ssm", "gpa", False, False)] == 8 * 64
    rep = res / "reports" / "five_way"
    assert (rep / "fig_five_way_panels.png").stat().st_size > 1000
    assert "proposed | self_attention | 8 |" in (rep / "table_compressor_pairs.md").read_text()
