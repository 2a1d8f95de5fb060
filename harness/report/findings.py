"""The study's findings in words: a verdict for each paired comparison and for each claim it tests.

``report.compare: [[a, b], ...]`` gives the pairs; ``report.claims: [{says, better, worse}, ...]`` names a
hypothesis (e.g. the paper's "an SSM block beats a Transformer block") as ``better > worse`` on the x
axis. Each verdict comes from the paired differences over shared seeds on the study's score (the mean
over suites when there are several, else the one suite), 95 % Student-t interval:

* significant: the interval excludes 0; not significant: it contains 0; no verdict below 3 pairs;
* a claim is *supported* when ``better - worse`` is significantly above 0, *contradicted* when
  significantly below, *not resolved* otherwise. Written whichever way it falls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.report.data import ReportError, StudyData
from harness.report.stats import MIN_SEEDS, Paired
from harness.report.tables import compare_pairs, paired_scores, protocol_note, x_value


@dataclass(frozen=True)
class Claim:
    says: str
    better: str
    worse: str


def study_claims(study: StudyData) -> list[Claim]:
    """``report.claims`` of the study, checked against the x axis's values."""
    raw = study.report.get("claims") or []
    out = []
    for i, c in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(c, dict) or not {"says", "better", "worse"} <= set(c):
            raise ReportError(f"{study.index_path}: report.claims[{i}] must be {{says, better, worse}}, got {c!r}")
        out.append(Claim(str(c["says"]), x_value(study, c["better"], f"report.claims[{i}].better"),
                         x_value(study, c["worse"], f"report.claims[{i}].worse")))
    return out


def _numbers(pr: Paired, scale: float, unit: str) -> str:
    d = pr.diff.scaled(scale)
    half = f" ± {d.half:.1f}" if math.isfinite(d.half) else ""
    p = f"p = {pr.p_value:.3f}, " if math.isfinite(pr.p_value) else ""
    return f"{d.mean:+.1f}{half} {unit} ({p}{d.n} paired seed{'s' if d.n != 1 else ''})"


def _score(name: str) -> str:
    return "the overall score" if name == "overall" else f"the {name}"


def verdict(pr: Paired) -> str:
    """``significant`` / ``not significant`` / ``no verdict`` for a paired difference."""
    d = pr.diff
    if d.n < MIN_SEEDS or not math.isfinite(d.half):
        return "no verdict"
    return "significant" if d.lo > 0 or d.hi < 0 else "not significant"


def findings(study: StudyData, options: dict[str, Any] | None = None) -> list[str]:
    """Markdown bullet lines: one per compare pair (and setting of the other axes), then one per claim."""
    options = options or {}
    scale = study.scale()
    unit = "pp" if scale == 100 else study.metric
    lines: list[str] = []
    for a, b in compare_pairs(study, options):
        for ctx, what, pr in paired_scores(study, a, b):
            where = f" at {ctx}" if ctx else ""
            v = verdict(pr)
            shown = {"significant": "**significant**", "not significant": "not significant",
                     "no verdict": f"no verdict (fewer than {MIN_SEEDS} paired seeds)"}[v]
            lines.append(f"- {a} − {b}{where} on {_score(what)}: {_numbers(pr, scale, unit)}: {shown}.")
    for c in study_claims(study):
        for ctx, what, pr in paired_scores(study, c.better, c.worse):
            where = f" at {ctx}" if ctx else ""
            v = verdict(pr)
            d = pr.diff
            word = ("no verdict" if v == "no verdict" else "supported" if v == "significant" and d.mean > 0
                    else "contradicted" if v == "significant" else f"not resolved at {d.n} seeds")
            lines.append(f"- Claim \"{c.says}\" ({c.better} > {c.worse}){where}: **{word}** here; "
                         f"{c.better} − {c.worse} on {_score(what)} = {_numbers(pr, scale, unit)}.")
    if lines:
        lines.append(f"- Verdicts: paired 95 % Student-t interval over shared seeds; significant = it excludes "
                     f"0. {protocol_note(study)}".rstrip())
    return lines
