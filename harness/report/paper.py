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

from harness.report import GENERATED_MARK, StudyReport, report_study, write_index
from harness.store import ResultsStore


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
