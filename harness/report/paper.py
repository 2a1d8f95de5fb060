"""The ``results/paper/`` target: every study's tables and figures plus one generated ``index.md``.

``build_paper(store, out)`` writes ``out/<study>/...`` for each study in the store (see
:func:`harness.report.report_study`) and ``out/index.md``: per study its description, spec, run counts,
commits and 'data as of' (the newest run finish time in the store, never the time of the rebuild), then
every artifact (link, files, caption) and the runs it came from. Rebuilding from the same store gives
the same bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.report import GENERATED_MARK, StudyReport, report_study
from harness.store import ResultsStore, atomic_write_text


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def study_section(rep: StudyReport, root: Path, level: int = 2) -> list[str]:
    """Markdown lines describing one study's artifacts and runs, links relative to ``root``."""
    st = rep.study
    c = st.status_counts()
    counts = ", ".join(f"{c[k]} {k}" for k in ("done", "failed", "running", "missing") if c.get(k))
    commits = ", ".join(f"`{x[:10]}`" for x in st.commits()) or "unknown"
    h = "#" * level
    lines = [f"{h} {st.name}", ""]
    if st.description:
        lines += [st.description, ""]
    lines += [f"- spec: `{st.spec_path or 'unknown'}`; study index: `studies/{st.name}.json`",
              f"- axes: {', '.join(f'`{a}` ({p})' for a, p in st.axes.items()) or 'none'}",
              f"- runs: {len(st.runs)} ({counts or 'none'}); seeds: "
              f"{', '.join(str(s) for s in sorted({r.seed for r in st.runs if r.seed is not None}))}",
              f"- data as of: {st.latest}; code: {commits}"]
    if st.stale_runs():
        lines.append(f"- **stale: {len(st.stale_runs())} of {len(st.runs)} runs** were recorded by older code, config "
                     "schema or data (Status column); rerun them with `python -m harness.sweep "
                     f"{st.spec_path or '<study>.yaml'} --rerun-stale`")
    if st.overrides:
        lines.append("- sweep overrides: " + ", ".join(f"`{o}`" for o in st.overrides))
    lines += ["",
              "| Artifact | Files | Content |", "|:---|:---|:---|"]
    for a in rep.artifacts:
        rel = a.path.relative_to(root) if a.path.is_relative_to(root) else a.path
        exts = ", ".join(p.suffix.lstrip(".") for p in a.files)
        lines.append(f"| [{a.path.stem}]({rel.as_posix()}) | {exts} | {_md(a.caption)} |")
    if rep.skipped:
        lines += ["", "Not drawn: " + "; ".join(f"{k} ({why})" for k, why in rep.skipped) + "."]
    lines += ["", f"<details><summary>Runs of {st.name} ({len(st.runs)})</summary>", "",
              "| Run | Variant | Seed | Status | Finished | Reason |", "|:---|:---|---:|:---|:---|:---|"]
    for v in st.variants:
        for r in v.runs:
            why = (r.reason or "").strip().splitlines()[0][:80] if r.reason else ""
            status = f"{r.status} (stale)" if r.stale else r.status
            why = why or (r.stale or "")[:80]
            lines.append(f"| `{r.run_id}` | {_md(v.label)} | {r.seed} | {status} | {r.finished or ''} | "
                         f"{_md(why)} |")
    lines += ["", "</details>", ""]
    return lines


def write_index(path: Path, reports: list[StudyReport], root: Path, store: ResultsStore,
                paper: bool = False) -> None:
    """Write the generated Markdown index of ``reports`` to ``path`` (links relative to ``root``).

    ``paper``: the ``results/paper/`` index (a table of studies first); else one study's own index.
    """
    latest = max((r.study.latest for r in reports), default="unknown")
    if paper:
        title, cmd = "Paper tables and figures", "python -m harness.report --paper"
    else:
        title = "Report: " + ", ".join(r.study.name for r in reports)
        cmd = "python -m harness.report " + " ".join(f"--study {r.study.name}" for r in reports)
    lines = [GENERATED_MARK, f"# {title}", "",
             f"Rebuilt by `{cmd}` from the results store `{store.root.as_posix()}` only; "
             f"data as of {latest} (newest run record). Tables: mean ± 95% CI over seeds (Student t), "
             "failed and missing runs counted and marked, never averaged in.", ""]
    if paper:
        lines += ["| Study | Runs | Artifacts | Data as of |", "|:---|---:|---:|:---|"]
        for r in reports:
            lines.append(f"| [{r.study.name}](#{r.study.name.lower()}) | {len(r.study.runs)} "
                         f"| {len(r.artifacts)} | {r.study.latest} |")
        lines.append("")
    for r in reports:
        lines += study_section(r, root, level=2)
    atomic_write_text(path, "\n".join(lines).rstrip("\n") + "\n")


def build_paper(store: ResultsStore, out: str | Path = "results/paper", *, studies: list[str] | None = None,
                compare: list[tuple[str, str]] | None = None, figures: bool = True,
                progress: bool = True, plugins: tuple[str, ...] | list[str] = ()) -> list[StudyReport]:
    """Rebuild every study's artifacts under ``out/<study>/`` and ``out/index.md``; return the reports."""
    out = Path(out)
    names = studies if studies is not None else store.studies()
    if not names:
        raise FileNotFoundError(f"{store.studies_dir}: no studies in the results store (run a sweep first)")
    out.mkdir(parents=True, exist_ok=True)
    # A full rebuild removes the study folders it wrote earlier whose study is gone from the store.
    for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in names and studies is None):
        idx = d / "index.md"
        if idx.exists() and idx.read_text().startswith(GENERATED_MARK):
            shutil.rmtree(d)
    reports = [report_study(store, n, out / n, compare=compare, figures=figures, progress=progress,
                            plugins=plugins)
               for n in names]
    write_index(out / "index.md", reports, root=out, store=store, paper=True)
    return reports
