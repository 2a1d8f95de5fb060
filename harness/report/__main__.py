"""CLI: ``python -m harness.report`` -- tables and figures from the results store. See ``--help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import ReportError, load_plugins, report_study
from harness.report.paper import build_paper
from harness.store import ResultsStore
from harness.yamlio import YamlFileError, load_yaml_file

EPILOG = """\
examples:
  python -m harness.report ablations/block_type.yaml      # -> results/reports/block_type/
  python -m harness.report --all                          # every study in the store
  python -m harness.report --paper                        # -> results/paper/ + results/paper/index.md
  python -m harness.report --study block_type --compare bi_ssm conv --out /tmp/bt

what it writes per study (only from results/store: studies/<study>.json and runs/*.json):
  table_main.{md,csv,tex}     variants x suites: mean ± 95% CI over seeds (Student t), best in bold,
                              seeds and run status (†k failed, k missing), costs when reported
  table_tasks.{md,csv,tex}    variants x task families        table_compare.*  paired A - B per suite
  fig_*.{png,pdf}             grouped_bars / lines / per_task_heatmap / pareto (chosen by the study's
                              report: section, else by the x axis: numeric -> lines, else bars)
  summary.csv, index.md       tidy numbers in stored units; the artifacts and the runs they came from
The study's `report:` section (x, figures, compare, metric, groups, cost, tables, plugins) steers it;
see docs/report.md. The same store always gives byte-identical files.
"""


def study_name_from_spec(path: str) -> str:
    """Read only the ``study:`` name from an ablation YAML (nothing else of the spec is used)."""
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"{p}: no such study spec")
    try:
        doc = load_yaml_file(p)
    except YamlFileError as e:
        raise ReportError(str(e)) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("study"), str) or not doc["study"]:
        raise ReportError(f"{p}: key 'study' (the study name) is missing or not a string")
    return doc["study"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m harness.report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Regenerate every table (Markdown, CSV, LaTeX) and figure (PNG, PDF) of a study from "
                    "the results store alone, byte-for-byte reproducibly.", epilog=EPILOG)
    ap.add_argument("specs", nargs="*", metavar="SPEC.yaml",
                    help="ablation specs; only their `study:` name is read")
    ap.add_argument("--study", action="append", default=[], metavar="NAME", help="a study by name (repeatable)")
    ap.add_argument("--all", action="store_true", help="every study in the store")
    ap.add_argument("--paper", action="store_true",
                    help="the paper target: all studies (or the ones named) into results/paper/ + index.md")
    ap.add_argument("--store", default="results/store", metavar="DIR", help="results store (default: %(default)s)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="output folder (default: results/reports/<study>/, or results/paper/ with --paper; "
                         "with several studies: DIR/<study>/)")
    ap.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="add a paired comparison A - B of two values of the x axis (repeatable)")
    ap.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="import MODULE first: it may register extra table/figure kinds")
    ap.add_argument("--no-figures", action="store_true", help="tables only (faster)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars, print only errors")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = ResultsStore(args.store)
    compare = [(a, b) for a, b in args.compare]
    try:
        load_plugins(args.plugin)
        names = [study_name_from_spec(s) for s in args.specs] + list(args.study)
        whole = args.all or not names  # --paper without names: the whole set (stale folders removed)
        if args.all or (args.paper and not names):
            names = store.studies()
            if not names:
                raise ReportError(f"{store.studies_dir}: no studies in the results store (run a sweep first)")
        if not names:
            build_parser().print_usage(sys.stderr)
            raise ReportError("name a study: SPEC.yaml, --study NAME, --all or --paper")
        names = list(dict.fromkeys(names))
        if args.paper:
            out = Path(args.out or "results/paper")
            reports = build_paper(store, out, studies=None if whole else names, compare=compare,
                                  figures=not args.no_figures, progress=not args.quiet, plugins=args.plugin)
        else:
            reports = []
            for n in names:
                if args.out:
                    out = Path(args.out) / n if len(names) > 1 else Path(args.out)
                else:
                    out = Path("results/reports") / n
                reports.append(report_study(store, n, out, compare=compare, figures=not args.no_figures,
                                            progress=not args.quiet, plugins=args.plugin))
    except (ReportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for r in reports:
            c = r.study.status_counts()
            print(f"{r.study.name}: {len(r.study.runs)} runs ({c.get('done', 0)} done, {c.get('failed', 0)} "
                  f"failed, {c.get('missing', 0)} missing, {len(r.study.stale_runs())} stale) -> {r.out_dir}/")
            for a in r.artifacts:
                print(f"  {a.kind:24s} {', '.join(p.name for p in a.files)}")
            for k, why in r.skipped:
                print(f"  {k:24s} skipped: {why}")
        if args.paper:
            print(f"index: {Path(args.out or 'results/paper') / 'index.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
