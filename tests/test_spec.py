"""Study spec validation (harness.sweep.spec): every shipped study loads; bad specs are refused with the
file and key path, and nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sweep.plan import plan_study
from harness.sweep.spec import SpecError, apply_overrides, load_spec, parse_override

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "ablations").glob("*.yaml"))  # every study ships runnable


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_studies_load_and_plan(name: str) -> None:
    spec = load_spec(ROOT / "ablations" / f"{name}.yaml")
    assert spec.study == name
    plan = plan_study(spec)
    parents = {r.parent for r in plan.runs if r.parent}  # evaluation-only children's parents, planned first
    assert len(plan.runs) == spec.n_variants * len(spec.seeds) + len(parents) >= 6
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    assert all(next(i for i, r in enumerate(plan.runs) if r.run_id == p) < min(
        i for i, r in enumerate(plan.runs) if r.parent == p) for p in parents)
    if spec.profile == "paper":  # real benchmarks, one seed of a 7B model per point
        return
    assert len(spec.seeds) >= 3
    for r in plan.runs:  # the probe protocol reads the fixed-target compress group only
        want = ["mia_compress"] if r.config.get("protocol") == "probe" else ["mia_long", "mia_dense"]
        assert r.config["eval"]["tasks"] == want or (name == "reducers_paper_twin" and r.config["eval"]["tasks"] == [
            "mia_long"])
    if spec.report.get("x"):
        assert spec.report["x"] in spec.labels.values()


def test_block_type_is_four_blocks_three_seeds() -> None:
    spec = load_spec(ROOT / "ablations" / "block_type.yaml")
    assert spec.grid == {"model.compressor.block": ["bi_ssm", "uni_ssm", "transformer", "identity"]}
    assert spec.seeds == [0, 1, 2] and spec.profile == "local"


def test_problems_are_collected_with_file_and_key_path(tmp_path: Path) -> None:
    p = write(tmp_path, """
study: bad
grids: {}
base:
  train: {stpes: 3}
grid:
  model.compressor.blok: [bi_ssm]
  train.steps: []
seeds: [0, "a"]
""")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    msg = str(ei.value)
    assert "nothing was run" in msg
    assert f"{p}: grids: unknown key (did you mean 'grid'?)" in msg
    assert "base.train.stpes: unknown key (did you mean 'steps'?)" in msg
    assert "grid.model.compressor.blok: unknown key 'blok' in model.compressor (did you mean 'block'?)" in msg
    assert "grid.train.steps: empty list of values" in msg
    assert "seeds[1]: expected an integer, got str 'a'" in msg
    paths = [k for k, _ in ei.value.problems]  # in file order, each with its line
    assert paths == ["grids", "base.train.stpes", "grid.model.compressor.blok", "grid.train.steps", "seeds[1]"]
    assert [p.line for p in ei.value.problems] == [3, 5, 7, 8, 9]


def test_values_the_model_rejects(tmp_path: Path) -> None:
    p = write(tmp_path, """
study: bad
grid:
  model.compressor.pooling: [weighted, maxx]
  train.steps: [10, 0]
  train.lr: [fast]
suites: [mia_lnog]
""")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    probs = dict(ei.value.problems)
    assert "did you mean 'max'" in probs["grid.model.compressor.pooling[1]"]
    assert "must be >= 1, got 0" in probs["grid.train.steps[1]"]
    assert "expected a number, got str 'fast'" in probs["grid.train.lr[0]"]
    assert "did you mean 'mia_long'" in probs["suites[0]"]


def test_zip_lengths_nesting_labels_and_report_x(tmp_path: Path) -> None:
    p = write(tmp_path, """
study: bad
grid:
  model.compressor: [{block: conv}]
  model.compressor.block: [conv]
zip:
  model.compressor.spatial.period: [8, 16]
  model.compressor.budget: [64]
labels: {train.steps: s}
report: {x: blokc}
""")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    probs = dict(ei.value.problems)
    assert "same length" in probs["zip"]
    assert "must not nest" in probs["grid.model.compressor.block"]
    assert "not an axis" in probs["labels.train.steps"]
    assert "not an axis label" in probs["report.x"]


def test_cross_axis_combination_rejected_at_planning(tmp_path: Path) -> None:
    # each value alone is fine; transformer with d_model=66 and 4 heads is not
    p = write(tmp_path, """
study: combo
grid:
  model.compressor.block: [bi_ssm, transformer]
  model.compressor.d_model: [64, 66]
""")
    spec = load_spec(p)
    with pytest.raises(SpecError) as ei:
        plan_study(spec)
    assert ei.value.problems == [("variant block=transformer, d_model=66",
                                  "model.compressor.n_heads: d_model=66 is not divisible by n_heads=4")]


def test_yaml_is_loaded_without_object_construction(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = write(tmp_path, f"study: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(p)
    assert not marker.exists()


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="empty"):
        load_spec(write(tmp_path, ""))
    with pytest.raises(SpecError, match="study: required"):
        load_spec(write(tmp_path, "seeds: [0]\n"))
    with pytest.raises(SpecError, match="unsafe study name"):
        load_spec(write(tmp_path, "study: ../escape\n"))


def test_overrides(tmp_path: Path) -> None:
    doc = {"study": "s", "base": {"train": {"steps": 300}},
           "grid": {"model.compressor.block": ["bi_ssm", "conv"]},
           "zip": {"model.compressor.spatial.period": [8, 16], "model.compressor.budget": [64, 32]}}
    out = apply_overrides(doc, ["train.steps=200", "seeds=[0, 5]", "model.compressor.block=conv",
                                "model.compressor.spatial.period=16", "eval.limit=3", "base.train.lr=0.01"])
    assert out["base"] == {"train": {"steps": 200, "lr": 0.01}, "eval": {"limit": 3}}
    assert out["seeds"] == [0, 5]
    assert out["grid"] == {"model.compressor.block": ["conv"]}
    assert out["zip"] == {"model.compressor.spatial.period": [16], "model.compressor.budget": [32]}
    assert doc["base"]["train"]["steps"] == 300  # input untouched
    out = apply_overrides(doc, ["grid.model.compressor.block=[identity, transformer]"])
    assert out["grid"]["model.compressor.block"] == ["identity", "transformer"]
    assert parse_override("profile=debug") == ("profile", "debug")
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        parse_override("train.steps")
    with pytest.raises(SpecError, match="did you mean 'train'"):
        apply_overrides(doc, ["trian.steps=3"])
    with pytest.raises(SpecError, match="not one of the zip values"):
        apply_overrides(doc, ["model.compressor.budget=7"])


def test_overrides_are_validated_and_named(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\ngrid:\n  model.compressor.block: [bi_ssm]\n")
    with pytest.raises(SpecError) as ei:
        load_spec(p, ["train.steps=-1"])
    assert "with --set train.steps=-1" in str(ei.value)
    assert ei.value.problems[0][0] == "base.train.steps"
    spec = load_spec(p, ["train.steps=7", "seeds=[3]"])
    assert spec.base == {"train": {"steps": 7}} and spec.seeds == [3]
    assert spec.path == str(p) and spec.overrides == ["train.steps=7", "seeds=[3]"]


def test_default_labels_disambiguate(tmp_path: Path) -> None:
    p = write(tmp_path, """
study: s
grid:
  model.compressor.spatial.period: [8]
  model.compressor.temporal.period: [1, 2]
  model.compressor.block: [conv]
""")
    spec = load_spec(p)
    assert spec.labels == {"model.compressor.spatial.period": "spatial.period",
                           "model.compressor.temporal.period": "temporal.period",
                           "model.compressor.block": "block"}
    assert [a.label for a in spec.axes] == ["spatial.period", "temporal.period", "block"]


def test_mapping_valued_axis_merges_into_the_base(tmp_path: Path) -> None:
    p = write(tmp_path, """
study: m
base: {model: {compressor: {pooling: max, spatial: {period: 8, n_layers: 2}}}}
grid:
  model.compressor: [{block: conv}, {block: identity, pooling: mean}]
""")
    runs = plan_study(load_spec(p)).runs
    comp = [r.config["model"]["compressor"] for r in runs]
    assert [(c["block"], c["pooling"], c["spatial"]["period"]) for c in comp] == [("conv", "max", 8),
                                                                                   ("identity", "mean", 8)]
    assert runs[1].label == 'compressor={"block":"identity","pooling":"mean"}'


# ------------------------------------------------------------------------ a spec that misses nothing
def test_a_repeated_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\nbase:\n  train: {lr: 0.01}\n  train: {steps: 5}\ngrid: {train.lr: [1, 2]}\n")
    with pytest.raises(SpecError, match=r"duplicate key 'train' \(first set at line 3\)") as ei:
        load_spec(p)
    assert str(p) in str(ei.value) and "line 4" in str(ei.value)
    with pytest.raises(SpecError, match="duplicate key 'lr'"):
        load_spec(write(tmp_path, "study: s\ngrid: {train.lr: [1], model.compressor.block: [conv]}\n"
                                  "base: {train: {lr: 1, lr: 2}}\n"))
    # a YAML merge key may be overridden on purpose
    spec = load_spec(write(tmp_path, "study: s\nbase:\n  train: &t {steps: 5, lr: 0.01}\n  eval: {limit: 2}\n"
                                     "grid: {train.batch_size: [2, 4]}\nlabels: {train.batch_size: bs}\n"))
    assert spec.base["train"] == {"steps": 5, "lr": 0.01}


def test_exponent_numbers_are_numbers_in_files_and_set(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\nbase: {train: {lr: 1e-3}}\ngrid: {train.weight_decay: [0, 1e-2]}\n")
    spec = load_spec(p, ["train.min_lr_ratio=1E-1"])
    assert spec.base["train"] == {"lr": 0.001, "min_lr_ratio": 0.1} and spec.grid["train.weight_decay"] == [0, 0.01]
    spec = load_spec(p, ["train.lr=2e-3"])
    assert plan_study(spec).runs[0].config["train"]["lr"] == 0.002
    assert parse_override("train.lr=1e-3") == ("train.lr", 0.001)


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("study: s\n# caf\u00e9\ngrid: {train.lr: [1]}\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1.yaml: .*line 2, column 6: not UTF-8 text \(byte 0xe9\)"):
        load_spec(p)


def test_a_set_typo_is_blamed_on_the_set(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\ngrid: {model.compressor.block: [conv]}\n")
    with pytest.raises(SpecError, match=r"--set 'train.lrr=1e-3': train.lrr: unknown key 'lrr' in train "
                                        r"\(did you mean 'lr'\?\)"):
        load_spec(p, ["train.lrr=1e-3"])


# a two-variant study whose x axis (block) takes bi_ssm and conv: the report section checks below
BI_CONV = "study: s\ngrid: {model.compressor.block: [bi_ssm, conv]}\nlabels: {model.compressor.block: block}\n"


def test_report_figures_and_compare_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"report.figures\[1\]: unknown figure kind 'grouped_bar' "
                                        r"\(did you mean 'grouped_bars'\?\)"):
        load_spec(write(tmp_path, BI_CONV + "report: {figures: [pareto, grouped_bar]}\n"))
    with pytest.raises(SpecError, match=r"report.compare\[0\]: 'convv' is not a value of axis 'block' "
                                        r"\(did you mean 'conv'\?\); values: bi_ssm, conv"):
        load_spec(write(tmp_path, BI_CONV + "report: {compare: [[bi_ssm, convv]]}\n"))
    with pytest.raises(SpecError, match=r"report.compare\[0\]: expected a pair"):
        load_spec(write(tmp_path, BI_CONV + "report: {compare: [[bi_ssm, conv, conv]]}\n"))
    with pytest.raises(SpecError, match=r"report.figures\[0\].x"):
        load_spec(write(tmp_path, BI_CONV + "report: {figures: [{kind: lines, x: blok}]}\n"))
    ok = write(tmp_path, BI_CONV + "report: {x: block, figures: [grouped_bars], compare: [[bi_ssm, conv]]}\n")
    assert load_spec(ok).report["compare"] == [["bi_ssm", "conv"]]
    # --set may narrow the x axis: the pair is valid (the index then drops it), not an error
    spec = load_spec(ok, ["model.compressor.block=conv"])
    assert spec.index_meta()["report"]["compare"] == []
    # kinds a study's report.plugins registers count (figures_v2: five_way_panels)
    load_spec(write(tmp_path, BI_CONV + "report: {plugins: [harness.report.figures_v2], figures: [cost_bars]}\n"))


def test_report_claims_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"report.claims\[0\].worse: 'transfomer' is not a value of axis 'block'"):
        load_spec(write(tmp_path, BI_CONV + "report: {claims: [{says: s, better: bi_ssm, worse: transfomer}]}\n"))
    with pytest.raises(SpecError, match=r"report.claims\[0\]: expected \{says: text, better: value, worse: value\}"):
        load_spec(write(tmp_path, BI_CONV + "report: {claims: [{says: s, better: bi_ssm}]}\n"))
    with pytest.raises(SpecError, match=r"report.claims\[0\].says: expected the claim in words"):
        load_spec(write(tmp_path, BI_CONV + "report: {claims: [{says: '', better: bi_ssm, worse: conv}]}\n"))
    ok = write(tmp_path, BI_CONV + "report: {x: block, claims: [{says: SSM wins, better: bi_ssm, worse: conv}]}\n")
    assert load_spec(ok).index_meta()["report"]["claims"] == [{"says": "SSM wins", "better": "bi_ssm", "worse": "conv"}]
    # a claim whose values --set narrowed away is left out of the index (the report could not judge it)
    assert load_spec(ok, ["model.compressor.block=conv"]).index_meta()["report"]["claims"] == []


# ------------------------------------------------------------------- every problem at once (issue 29)
def test_a_misspelt_grid_key_is_named_first_and_what_follows_from_it_says_so(tmp_path: Path) -> None:
    text = (ROOT / "ablations" / "block_type.yaml").read_text()
    assert text.count("  model.compressor.block: [") == 1
    p = write(tmp_path, text.replace("  model.compressor.block: [", "  model.compresor.block: ["))
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    first, *rest = ei.value.problems
    assert first.path == "grid.model.compresor.block" and "did you mean 'compressor'" in first.message
    assert first.cause is None and first.line == text.splitlines().index(
        "  model.compressor.block: [bi_ssm, uni_ssm, transformer, identity]") + 1
    # its label, report.x, the compare pairs and the claim are unknown because of it, and say so
    assert rest and all(q.cause == "grid.model.compresor.block" for q in rest), rest
    assert {q.path.split("[")[0] for q in rest} == {"labels.model.compressor.block", "report.x", "report.compare",
                                                   "report.claims"}
    msg = str(ei.value)
    assert f"({len(rest)} follow from an earlier one)" in msg
    assert msg.splitlines()[1].startswith(f"{p}: grid.model.compresor.block: unknown key 'compresor'")
    assert "follows from grid.model.compresor.block]" in msg.splitlines()[2]
    assert [q.line for q in ei.value.problems] == sorted(q.line for q in ei.value.problems)  # file order


def test_three_independent_mistakes_are_all_reported_by_one_run_of_the_cli(tmp_path: Path, capsys) -> None:
    from harness.sweep.__main__ import main

    p = write(tmp_path, """
study: three
base:
  train: {steps: 3, lrr: 0.01}
grid:
  model.compressor.pooling: [weighted, maxx]
seeds: [0, 0]
""")
    assert main([str(p), "--dry-run", "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "error: 3 problem(s) in the study spec; nothing was run:", err
    assert lines[1].startswith(f"{p}: base.train.lrr: unknown key (did you mean 'lr'?)") and "[line 4]" in lines[1]
    assert lines[2].startswith(f"{p}: grid.model.compressor.pooling[1]: unknown value 'maxx' (did you mean 'max'?)")
    assert lines[3] == f"{p}: seeds: repeated seeds in [0, 0]  [line 7]"
    assert "follows from" not in err and not (tmp_path / "res").exists()  # nothing written


def test_every_bad_key_of_base_and_every_bad_set_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\nbase:\n  train: {stpes: 3, lr: fast}\n  eval: {limitt: 2}\n"
                        "grid: {model.compressor.block: [conv]}\n")
    with pytest.raises(SpecError) as ei:
        load_spec(p, ["train.lrr=1", "seeds=[0]", "trian.steps=2"])
    got = [(q.source, q.path) for q in ei.value.problems]
    assert got == [("--set 'train.lrr=1'", "train.lrr"), ("--set 'trian.steps=2'", "trian.steps"),
                   (None, "base.train.stpes"), (None, "base.train.lr"), (None, "base.eval.limitt")], got


def test_report_to_is_no_axis(tmp_path: Path) -> None:
    p = write(tmp_path, "study: s\ngrid: {train.report_to: [[tensorboard], []]}\n")
    with pytest.raises(SpecError, match=r"grid.train.report_to: is where a run reports or how it execut"):
        load_spec(p)
    spec = load_spec(write(tmp_path, "study: s\ngrid: {model.compressor.block: [conv]}\n"),
                     ["train.report_to=[tensorboard]"])
    assert plan_study(spec).runs[0].config["train"]["report_to"] == ["tensorboard"]
    with pytest.raises(SpecError, match=r"report_to\[0\]: unknown value 'tensorbord' \(did you mean 'tensorboard'"):
        load_spec(write(tmp_path, "study: s\ngrid: {model.compressor.block: [conv]}\n"),
                  ["train.report_to=[tensorbord]"])
