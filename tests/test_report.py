"""harness.report on a synthetic results store: numbers, files, honesty about failures, reproducibility."""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from harness.identity import current_versions
from harness.report import ReportError, report_study
from harness.report.__main__ import main
from harness.report.data import load_study
from harness.report.figures import FIGURES, FigureResult, pareto_front, register_figure
from harness.report.paper import build_paper
from harness.store import ResultsStore

BLOCKS = ["bi_ssm", "uni_ssm", "transformer", "conv"]
LONG = ["mia_needle_what", "mia_count", "mia_order"]
DENSE = ["mia_action", "mia_change"]
# Two-sided 95% Student t critical values by degrees of freedom (tables), independent of scipy.
T975 = {1: 12.706204736174705, 2: 4.302652729749464, 3: 3.182446305284263}

CURRENT = {**current_versions(), "dataset": "synthetic:test"}  # records of the current code


def _value(rng: np.random.Generator, base: float) -> float:
    return float(np.clip(base + rng.normal(0, 0.04), 0, 1))


def make_block_store(root: Path, *, failed=(), missing=(), running=(), study="block_type",
                     report=None, with_costs=True, with_all=False) -> ResultsStore:
    """4 blocks x zip(period, budget) x 3 seeds. ``failed``/``missing``/``running``: (block, period, seed)."""
    store = ResultsStore(root)
    rng = np.random.default_rng(0)
    entries = []
    base = {"bi_ssm": 0.72, "uni_ssm": 0.64, "transformer": 0.55, "conv": 0.48}
    for block in BLOCKS:
        for period, budget in [(8, 128), (16, 64)]:
            for seed in (0, 1, 2):
                rid = f"{study}-{block}-p{period}-s{seed}"
                variant = {"block": block, "period": period, "budget": budget}
                entries.append({"run_id": rid, "seed": seed, "variant": variant,
                                "label": ",".join(f"{k}={v}" for k, v in variant.items())})
                key = (block, period, seed)
                if key in missing:
                    continue
                b = base[block] - (0.05 if period == 16 else 0.0)
                rec = {"run_id": rid, "seed": seed, "status": "done", "identity": CURRENT, "reason": None,
                       "config": {"eval": {"tasks": ["mia_long", "mia_dense"]}, "seed": seed},
                       "git_commit": "0123456789abcdef", "started": "2026-11-20T10:00:00",
                       "finished": f"2026-11-20T1{seed}:{period:02d}:00", "wall_time_s": 100.0 + seed,
                       "tokens": {"visual_in": 4096, "llm_visual": budget} if with_costs else {},
                       "metrics": []}
                if with_costs:
                    rec["extra"] = {"ttft_ms": 20.0 + budget * 0.5 + (30 if block == "transformer" else 0),
                                    "compressor_ms": 3.0, "peak_mem_mb": 900.0}
                fam = {t: _value(rng, b + 0.03 * i) for i, t in enumerate(LONG + DENSE)}
                rec["metrics"] = [{"task": t, "metric": "acc", "value": v, "n": 50} for t, v in fam.items()]
                rec["metrics"] += [{"task": "mia_long", "metric": "acc", "n": 150,
                                    "value": float(np.mean([fam[t] for t in LONG]))},
                                   {"task": "mia_dense", "metric": "acc", "n": 100,
                                    "value": float(np.mean([fam[t] for t in DENSE]))}]
                if with_all:  # the evaluator's overall score and chance level (harness.evaluate)
                    rec["metrics"].append({"task": "mia_all", "metric": "acc", "n": 250,
                                           "value": float(np.mean(list(fam.values())))})
                    rec["extra"] = {**rec.get("extra", {}), "chance": 0.25}
                if key in failed:
                    rec.update(status="failed", reason="RuntimeError: CUDA out of memory\ntraceback...",
                               metrics=[], finished=None)
                if key in running:
                    rec.update(status="running", metrics=[], finished=None)
                store.write_run(rec)
    meta = {"description": "SSM vs Transformer vs conv as the mixing block",
            "spec_path": f"ablations/{study}.yaml", "created": "2026-11-20T09:00:00",
            "axes": {"block": "model.compressor.block", "period": "model.compressor.spatial.period",
                     "budget": "model.compressor.budget"},
            "report": report if report is not None else
            {"x": "block", "compare": [["bi_ssm", "transformer"]]}}
    store.write_study(study, entries, meta)
    return store


def _seed_values(store: ResultsStore, block: str, period: int, task: str) -> list[float]:
    out = []
    for seed in (0, 1, 2):
        rec = store.read_run(f"block_type-{block}-p{period}-s{seed}")
        if rec and rec["status"] == "done":
            out += [m["value"] for m in rec["metrics"] if m["task"] == task and m["metric"] == "acc"]
    return out


def _expected_cell(vals: list[float]) -> str:
    """Independent formatting of 'mean ± half' in percent with statistics + the t table."""
    n = len(vals)
    mean = statistics.fmean(vals) * 100
    if n == 1:
        return f"{mean:.1f} (n=1)"
    half = T975[n - 1] * statistics.stdev(vals) * 100 / math.sqrt(n)
    return f"{mean:.1f} ± {half:.1f}" + (" (n=2)" if n == 2 else "")


def _md_rows(text: str) -> list[list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip().replace("**", "") for c in r.strip("|").split(" | ")] for r in rows]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = make_block_store(root / "store", failed={("transformer", 16, 2), ("conv", 16, 1), ("conv", 16, 2)},
                             missing={("conv", 8, 1)})
    out = root / "out"
    rep = report_study(store, "block_type", out, progress=False)
    return store, out, rep


def test_table_numbers_equal_independent_computation(built):
    store, out, _ = built
    rows = _md_rows((out / "table_main.md").read_text())
    header, body = rows[0], rows[1:]
    assert header[:5] == ["block", "budget", "period", "Long", "Dense"]
    assert len(body) == 8
    checked = 0
    for row in body:
        block, period = row[0], int(row[2])
        for col, task in ((3, "mia_long"), (4, "mia_dense")):
            vals = _seed_values(store, block, period, task)
            assert row[col] == _expected_cell(vals), (block, period, task)
            checked += 1
    assert checked == 16
    # the CSV carries the same numbers unrounded (4 decimals) with n
    with open(out / "table_main.csv") as f:
        recs = list(csv.DictReader(f))
    r = next(r for r in recs if r["block"] == "uni_ssm" and r["period"] == "8")
    vals = _seed_values(store, "uni_ssm", 8, "mia_long")
    assert float(r["mia_long_mean"]) == pytest.approx(statistics.fmean(vals) * 100, abs=1e-4)
    assert float(r["mia_long_ci95"]) == pytest.approx(T975[2] * statistics.stdev(vals) * 100 / math.sqrt(3),
                                                      abs=1e-4)
    assert r["mia_long_n"] == "3"


def test_best_is_bold_and_latex_is_booktabs(built):
    _, out, _ = built
    md = (out / "table_main.md").read_text()
    bold_rows = [ln for ln in md.splitlines() if ln.startswith("| bi_ssm | 128 | 8 |")]
    assert bold_rows and bold_rows[0].count("**") >= 4  # bi_ssm period 8 is best on both suites
    tex = (out / "table_main.tex").read_text()
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{", r"$\pm$", r"bi\_ssm"):
        assert token in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert body.count(r"\\") == 8


def test_failed_and_missing_runs_are_marked_not_averaged(built):
    store, out, _ = built
    rows = {(r[0], r[2]): r for r in _md_rows((out / "table_main.md").read_text())[1:]}
    conv16 = rows[("conv", "16")]
    assert conv16[-1] == "1/3 †2 failed" and conv16[-2] == "1"
    assert conv16[3].endswith("(n=1)") and "±" not in conv16[3]
    assert rows[("conv", "8")][-1] == "2/3 1 missing" and rows[("conv", "8")][3].endswith("(n=2)")
    assert rows[("transformer", "16")][-1] == "2/3 †1 failed"
    assert rows[("bi_ssm", "8")][-1] == "3/3"
    md = (out / "table_main.md").read_text()
    assert "CUDA out of memory" in md and "never counted as zero" in md
    # the summary CSV counts the failures per variant and drops them from n
    with open(out / "summary.csv") as f:
        recs = [r for r in csv.DictReader(f) if r["v.block"] == "conv" and r["v.period"] == "16"
                and r["task"] == "mia_long"]
    assert recs[0]["n"] == "1" and recs[0]["failed"] == "2" and recs[0]["ci95_lo"] == ""


def test_compare_table_is_paired_difference(built):
    store, out, _ = built
    rows = _md_rows((out / "table_compare.md").read_text())
    assert rows[0][:5] == ["A", "B", "budget", "period", "Suite"]
    r = next(r for r in rows[1:] if r[3] == "8" and r[4] == "Long")
    a = _seed_values(store, "bi_ssm", 8, "mia_long")
    b = _seed_values(store, "transformer", 8, "mia_long")
    d = [x - y for x, y in zip(a, b)]
    half = T975[2] * statistics.stdev(d) * 100 / math.sqrt(3)
    assert r[5] == f"{statistics.fmean(d) * 100:+.1f} ± {half:.1f}"
    # period 16: transformer seed 2 failed -> 2 pairs, marked
    r16 = next(r for r in rows[1:] if r[3] == "16" and r[4] == "Long")
    assert r16[5].endswith("(n=2)") and r16[7] == "0,1 (unpaired: 1)"


def test_figures_written_non_empty(built):
    _, out, rep = built
    import matplotlib.image as mpimg

    names = sorted(p.name for p in out.glob("fig_*"))
    assert names == ["fig_grouped_bars_block.pdf", "fig_grouped_bars_block.png", "fig_pareto.pdf",
                     "fig_pareto.png", "fig_per_task_heatmap.pdf", "fig_per_task_heatmap.png"]
    for p in out.glob("fig_*.png"):
        img = mpimg.imread(p)
        assert img.shape[0] > 300 and img.shape[1] > 600
        assert float(img[..., :3].std()) > 0.05  # not a blank canvas
        assert b"Software" not in p.read_bytes()[:4096]  # no version stamp in the PNG text chunks
    for p in out.glob("fig_*.pdf"):
        data = p.read_bytes()
        assert data.startswith(b"%PDF") and len(data) > 5000 and b"CreationDate" not in data
    idx = (out / "index.md").read_text()
    assert "fig_pareto" in idx and "block_type-conv-p16-s1" in idx and "2026-11-20T12:16:00" in idx


def test_rebuild_is_byte_identical(tmp_path, built):
    store, out, _ = built
    again = tmp_path / "again"
    report_study(store, "block_type", again, progress=False)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    second = {p.name: p.read_bytes() for p in again.iterdir()}
    assert first.keys() == second.keys() and len(first) >= 16
    assert [k for k in first if first[k] != second[k]] == []
    # a fresh process (the real CLI) writes the same bytes too, index.md included
    import subprocess
    import sys

    cli = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "harness.report", "--study", "block_type", "--store", str(store.root),
                    "--out", str(cli), "-q"], check=True)
    third = {p.name: p.read_bytes() for p in cli.iterdir()}
    assert third.keys() == first.keys()
    assert [k for k in first if first[k] != third[k]] == []


def test_costs_from_different_devices_are_flagged(tmp_path):
    """A study whose runs were measured partly on a GPU and partly on a CPU (a rerun of some rows
    elsewhere) says so under its table: its latency columns only compare within a device."""
    store = make_block_store(tmp_path / "store")
    report_study(store, "block_type", tmp_path / "same", progress=False, figures=False)
    assert "different devices" not in (tmp_path / "same" / "table_main.md").read_text()
    for rid in store.run_ids():
        rec = store.read_run(rid)
        rec["job"] = {"device": "cpu" if "transformer" in rid else "NVIDIA H100 80GB HBM3"}
        store.write_run(rec)
    report_study(store, "block_type", tmp_path / "mixed", progress=False, figures=False)
    text = (tmp_path / "mixed" / "table_main.md").read_text()
    assert "Costs come from different devices: NVIDIA H100 80GB HBM3 (18 runs), cpu (6 runs)" in text


def test_all_failed_store_gives_honest_table(tmp_path):
    fails = {(b, p, s) for b in BLOCKS for p in (8, 16) for s in (0, 1, 2)}
    store = make_block_store(tmp_path / "store", failed=fails - {("bi_ssm", 8, 0)},
                             running={("bi_ssm", 8, 0)})
    rep = report_study(store, "block_type", tmp_path / "out", progress=False)
    md = (tmp_path / "out" / "table_main.md").read_text()
    body = _md_rows(md)[1:]
    assert all(r[3] == "—" and r[4] == "—" for r in body)
    row = next(r for r in body if r[0] == "bi_ssm" and r[2] == "8")
    assert row[-1] == "0/3 †2 failed, 1 running"
    assert "23 failed" in md
    # figures that have nothing to draw are skipped or drawn empty, never a crash
    assert {k for k, _ in rep.skipped} <= {"figure:grouped_bars", "figure:per_task_heatmap", "figure:pareto",
                                           "table:tasks", "table:compare"}


def test_a_plugin_loaded_for_one_study_adds_nothing_to_another(tmp_path):
    # --paper builds every study in one process: the v2 plugin's tables must stay with the studies that
    # list it in report.plugins
    v2 = make_block_store(tmp_path / "store", study="v2ish", report={"plugins": ["harness.report.figures_v2"]})
    plain = make_block_store(tmp_path / "store", study="block_type")
    assert v2.root == plain.root
    with_plugin = report_study(v2, "v2ish", tmp_path / "a", progress=False)
    without = report_study(plain, "block_type", tmp_path / "b", progress=False)
    kinds = [a.kind for a in without.artifacts] + [k for k, _ in without.skipped]
    assert "table:reported_vs_reproduced" in [a.kind for a in with_plugin.artifacts] + \
        [k for k, _ in with_plugin.skipped]
    assert "table:reported_vs_reproduced" not in kinds
    assert not list((tmp_path / "b").glob("*reported*"))
    # ... unless asked for on the command line (--plugin): then every study gets its tables
    asked = report_study(plain, "block_type", tmp_path / "c", progress=False, figures=False,
                         plugins=["harness.report.figures_v2"])
    assert "table:reported_vs_reproduced" in [a.kind for a in asked.artifacts] + [k for k, _ in asked.skipped]


def test_lines_for_numeric_axis_and_registry(tmp_path):
    store = make_block_store(tmp_path / "store", report={"x": "budget", "figures": ["lines", "my_kind"]})
    calls = []

    @register_figure("my_kind")
    def _mine(study, spec):
        import matplotlib.pyplot as plt

        calls.append(study.name)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        return FigureResult(fig, "mine")

    try:
        rep = report_study(store, "block_type", tmp_path / "out", progress=False)
    finally:
        FIGURES.pop("my_kind")
    files = sorted(p.name for p in (tmp_path / "out").glob("fig_*.png"))
    assert files == ["fig_lines_budget.png", "fig_my_kind.png"] and calls == ["block_type"]
    st = rep.study
    assert st.x == "budget" and st.determined_by("budget") == ["period"] and st.series_axes("budget") == ["block"]


def test_bad_report_section_names_file_and_key(tmp_path):
    store = make_block_store(tmp_path / "s1", report={"x": "block", "figures": ["nope"]})
    with pytest.raises(ReportError, match=r"block_type\.json: report\.figures\[0\]: unknown figure kind 'nope'"):
        report_study(store, "block_type", tmp_path / "o", progress=False)
    store = make_block_store(tmp_path / "s2", report={"x": "block", "compare": [["bi_ssm", "lstm"]]})
    with pytest.raises(ReportError, match=r"report\.compare\[0\]: 'lstm' is not a value of axis 'block'"):
        report_study(store, "block_type", tmp_path / "o", progress=False)
    store = make_block_store(tmp_path / "s3", report={"x": "blocks"})
    with pytest.raises(ReportError, match=r"report\.x = 'blocks' is not an axis"):
        load_study(store, "block_type")


def test_cli_spec_all_and_paper(tmp_path, capsys):
    store = make_block_store(tmp_path / "store", failed={("conv", 8, 0)})
    make_block_store(tmp_path / "store", study="tiny_budget", report={"x": "budget"}, with_costs=False)
    spec = tmp_path / "block_type.yaml"
    spec.write_text("study: block_type\ngrid: {this: [is, ignored]}\n")
    out = tmp_path / "rep"
    assert main([str(spec), "--store", str(store.root), "--out", str(out), "-q", "--no-figures",
                 "--compare", "uni_ssm", "conv"]) == 0
    assert (out / "table_main.tex").exists() and not list(out.glob("fig_*"))
    assert "uni_ssm" in (out / "table_compare.md").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {}\n")
    assert main([str(bad), "--store", str(store.root), "-q"]) == 2
    assert "key 'study'" in capsys.readouterr().err
    paper = tmp_path / "paper"
    assert main(["--paper", "--store", str(store.root), "--out", str(paper), "-q"]) == 0
    idx = (paper / "index.md").read_text()
    assert "## block_type" in idx and "## tiny_budget" in idx and "(block_type/fig_pareto.png)" in idx
    assert (paper / "tiny_budget" / "fig_lines_budget.png").exists()
    assert not (paper / "tiny_budget" / "fig_pareto.png").exists()  # no costs reported: no Pareto plot
    links = re.findall(r"\]\(([^)#]+)\)", idx)
    assert links and all((paper / ln).exists() for ln in links)
    # a named subset keeps the other folders; a full rebuild drops folders of studies gone from the store
    stale = paper / "old_study"
    stale.mkdir()
    (stale / "index.md").write_text((paper / "block_type" / "index.md").read_text())
    assert main(["--paper", "--study", "block_type", "--store", str(store.root), "--out", str(paper), "-q",
                 "--no-figures"]) == 0
    assert stale.exists() and (paper / "tiny_budget" / "table_main.md").exists()
    assert main(["--paper", "--store", str(store.root), "--out", str(paper), "-q"]) == 0
    assert not stale.exists() and (paper / "index.md").read_text() == idx
    reports = build_paper(store, tmp_path / "paper2", progress=False)
    assert (tmp_path / "paper2" / "index.md").read_bytes() == idx.encode()
    assert [r.study.name for r in reports] == ["block_type", "tiny_budget"]


def test_pareto_front():
    pts = [(10, 0.5), (20, 0.7), (15, 0.4), (40, 0.69), (5, 0.1)]
    assert pareto_front(pts) == [4, 0, 1]


def test_overall_score_and_chance_from_evaluator(tmp_path):
    store = make_block_store(tmp_path / "store", with_all=True, failed={("conv", 8, 2)})
    rep = report_study(store, "block_type", tmp_path / "out", progress=False)
    st = rep.study
    assert st.groups == ["mia_long", "mia_dense", "mia_all"] and st.overall == "mia_all"
    assert st.chance() == pytest.approx(25.0) and "x.chance" not in st.costs
    rows = _md_rows((tmp_path / "out" / "table_main.md").read_text())
    assert rows[0][3:6] == ["Long", "Dense", "All"] and "Mean" not in rows[0]
    r = next(r for r in rows[1:] if r[0] == "conv" and r[2] == "8")
    vals = []
    for seed in (0, 1):
        rec = store.read_run(f"block_type-conv-p8-s{seed}")
        vals += [m["value"] for m in rec["metrics"] if m["task"] == "mia_all"]
    assert r[5] == _expected_cell(vals)
    # the pareto y is the overall score, per seed
    v = st.find_variants("conv")[1]
    assert st.score_values(v) == dict(enumerate(vals))


def test_plugin_module_from_report_section(tmp_path, monkeypatch):
    """A module named in report.plugins registers a table kind; the core is not touched."""
    mod = tmp_path / "plugs" / "my_report_plugin.py"
    mod.parent.mkdir()
    mod.write_text(
        "from harness.report.tables import Table, Column, Cell, register_table\n"
        "@register_table('reported_vs_reproduced')\n"
        "def _rvr(study, options):\n"
        "    return Table('table_rvr', 'reported vs reproduced', [Column('v', 'Variant')],\n"
        "                 [[Cell(text=v.label)] for v in study.variants])\n")
    monkeypatch.syspath_prepend(str(mod.parent))
    store = make_block_store(tmp_path / "store", report={"x": "block", "plugins": ["my_report_plugin"],
                                                         "tables": ["main", "reported_vs_reproduced"]})
    from harness.report.tables import TABLES

    before = dict(TABLES)  # the name may already be the v2 plugin's: put the registry back as it was
    try:
        report_study(store, "block_type", tmp_path / "out", figures=False, progress=False)
    finally:
        TABLES.clear()
        TABLES.update(before)
    assert "block=conv, budget=64, period=16" in (tmp_path / "out" / "table_rvr.md").read_text()
    store = make_block_store(tmp_path / "s2", report={"plugins": ["no_such_plugin_module"]})
    with pytest.raises(ReportError, match="cannot import report plugin 'no_such_plugin_module'"):
        report_study(store, "block_type", tmp_path / "o2", progress=False)


def test_findings_give_each_comparison_and_claim_its_verdict(tmp_path):
    """findings.md: the paired difference on the study's score (here the mean of the two suites) with a
    verdict that follows the 95 % interval, computed independently; a claim judged whichever way it falls."""
    report = {"x": "block", "compare": [["bi_ssm", "transformer"]],
              "claims": [{"says": "a Transformer beats an SSM", "better": "transformer", "worse": "bi_ssm"}]}
    store = make_block_store(tmp_path / "store", failed={("transformer", 16, 2)}, report=report)
    rep = report_study(store, "block_type", tmp_path / "out", progress=False, figures=False)
    text = (tmp_path / "out" / "findings.md").read_text()
    assert rep.findings and "### Findings" in (tmp_path / "out" / "index.md").read_text()

    def score(block: str, period: int) -> list[float]:
        long_, dense = _seed_values(store, block, period, "mia_long"), _seed_values(store, block, period, "mia_dense")
        return [(a + b) / 2 for a, b in zip(long_, dense)]

    d = [a - b for a, b in zip(score("bi_ssm", 8), score("transformer", 8))]
    mean, half = statistics.fmean(d) * 100, T975[2] * statistics.stdev(d) * 100 / math.sqrt(3)
    line = next(ln for ln in text.splitlines() if ln.startswith("- bi_ssm − transformer at budget=128, period=8"))
    assert f"{mean:+.1f} ± {half:.1f} pp" in line and "3 paired seeds" in line
    assert ("**significant**" in line) == (abs(mean) > half)
    claim = next(ln for ln in text.splitlines() if ln.startswith('- Claim "a Transformer beats an SSM"')
                 and "period=8" in ln)
    assert "**contradicted**" in claim if mean - half > 0 else "contradicted" not in claim
    # period 16: the Transformer's seed 2 failed, so only 2 pairs: no verdict either way
    short = next(ln for ln in text.splitlines() if ln.startswith("- bi_ssm − transformer at budget=64, period=16"))
    assert "no verdict" in short and "2 paired seeds" in short
    assert "no verdict" in next(ln for ln in text.splitlines() if ln.startswith("- Claim") and "period=16" in ln)
