"""Paper style: palette, sizes, axis labels with units, and the byte-stable save options.

Everything visual that more than one figure shares lives here, so every figure of the project looks the
same: Okabe-Ito colours (colour-blind safe, distinct in grey scale together with the markers and hatches),
8 pt DejaVu (bundled with matplotlib, so the glyphs and the bytes do not depend on the machine's fonts),
sizes for a single column (3.3 in) and a full page width (6.9 in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # as harness.report.figures: before pyplot, whichever module is imported first
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design": safe for the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES: tuple[str, ...] = ("", "////", "....", "xxxx", "\\\\\\\\", "oo", "--", "++")
HEATMAP_CMAP = "cividis"  # perceptually uniform and colour-blind safe

COLUMN_WIDTH_IN = 3.3  # one column of a two-column paper
PAGE_WIDTH_IN = 6.9  # both columns
PNG_DPI = 300

PAPER_RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "axes.axisbelow": True,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # TrueType in the PDF: what conference templates ask for
    "ps.fonttype": 42,
    "svg.hashsalt": "harness",
    "path.simplify": False,
}

# Metadata that would otherwise stamp the software version or the current time into the files.
PNG_METADATA: dict[str, Any] = {"Software": None}
PDF_METADATA: dict[str, Any] = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}

# Axis names (the study's labels, or the last part of a dotted path) -> axis titles with units.
AXIS_TITLES: dict[str, str] = {
    "block": "Mixing block",
    "pooling": "Pooling",
    "budget": "Token budget (LLM visual tokens)",
    "period": "Query period (tokens per query)",
    "spatial.period": "Query period (tokens per query)",
    "temporal.period": "Temporal period (frames per query)",
    "n_layers": "Mixing layers",
    "n_frames": "Frames per video",
    "frames": "Frames per video",
    "gate": "Gated skip",
    "encoder": "Vision encoder",
    "llm": "Language model",
    "compressor": "Compressor",
    "llm_visual_tokens": "LLM visual tokens per video",
    "visual_in_tokens": "Visual tokens into the compressor",
    "x.ttft_ms": "Time to first token (ms)",
    "x.compressor_ms": "Compressor time (ms)",
    "x.peak_mem_mb": "Peak memory (MiB)",
    "wall_time_s": "Run wall time (s)",
}
# Costs the Pareto plot and the tables know, in order of preference (lower is better for all).
COST_KEYS: tuple[str, ...] = ("llm_visual_tokens", "llm_input_tokens", "x.ttft_ms", "x.compressor_ms",
                               "x.peak_mem_mb", "llm_visual_min", "llm_visual_max")
COST_SHORT: dict[str, str] = {
    "llm_visual_tokens": "LLM tokens",
    "llm_input_tokens": "LLM input tokens",
    "visual_in_tokens": "Input tokens",
    "x.ttft_ms": "TTFT (ms)",
    "x.compressor_ms": "Compressor (ms)",
    "x.peak_mem_mb": "Peak mem (MiB)",
    "llm_visual_min": "LLM tokens (min)",
    "llm_visual_max": "LLM tokens (max)",
    "wall_time_s": "Wall (s)",
}
SUITE_NAMES: dict[str, str] = {
    "mia_long": "Long",
    "mia_dense": "Dense",
    "paper_long": "Long (real)",
    "paper_dense": "Dense (real)",
    "overall": "Overall",
    "mia_all": "All",
}
# Metrics stored as fractions in [0, 1] and shown in percent.
PERCENT_METRICS: frozenset[str] = frozenset({"acc", "accuracy", "acc_norm", "exact_match", "em", "f1",
                                             "lvb_acc", "lvbench_score"})
#: metrics that are fractions for one lmms-eval task only (a name too generic to list above)
TASK_FRACTIONS: frozenset[tuple[str, str]] = frozenset({("egoschema_subset", "score"), ("egoschema", "score")})


def is_fraction(metric: str, task: str | None = None) -> bool:
    """Whether ``metric`` (of ``task``) is stored as a fraction and shown in percent. lmms-eval's
    ``videomme_perception_score``, ``mlvu_percetion_score`` and ``mvbench_accuracy`` are percentages."""
    return metric in PERCENT_METRICS or (task, metric) in TASK_FRACTIONS


def axis_title(name: str) -> str:
    """A readable axis title with units for an axis label, a dotted path or a cost key."""
    if name in AXIS_TITLES:
        return AXIS_TITLES[name]
    last = name.rsplit(".", 1)[-1]
    if last in AXIS_TITLES:
        return AXIS_TITLES[last]
    if name.startswith("x."):
        unit = {"_ms": " (ms)", "_s": " (s)", "_mb": " (MiB)", "_gb": " (GiB)"}
        for suffix, u in unit.items():
            if last.endswith(suffix):
                return last[: -len(suffix)].replace("_", " ").capitalize() + u
    return last.replace("_", " ").capitalize()


def metric_title(metric: str) -> str:
    """``acc`` -> ``Accuracy (%)``; other metrics keep their name, in % when they are fractions."""
    if metric in ("acc", "accuracy"):
        return "Accuracy (%)"
    return f"{metric} (%)" if metric in PERCENT_METRICS else metric


def suite_name(task: str) -> str:
    """Short display name of a suite or a task family (``mia_needle_what`` -> ``needle what``)."""
    if task in SUITE_NAMES:
        return SUITE_NAMES[task]
    return task.removeprefix("mia_").replace("_", " ")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def hatch(i: int) -> str:
    return HATCHES[i % len(HATCHES)]


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib defaults + the paper rc, independent of the user's matplotlibrc; restored on exit."""
    with mpl.rc_context():
        mpl.rcdefaults()
        mpl.rcParams.update(PAPER_RC)
        yield


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf without timestamps or version stamps; close ``fig``.

    Returns the two paths. The same figure saved twice gives the same bytes.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=PNG_DPI, metadata=PNG_METADATA)
    fig.savefig(pdf, metadata=PDF_METADATA)
    plt.close(fig)
    return [png, pdf]
