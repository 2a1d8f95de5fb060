"""Offline mini copies of real lmms-eval benchmarks, in each benchmark's exact dataset schema.

``build_minibench(hf_home, tasks)`` writes, for each lmms-eval 0.7.3 task:

* a few items in the columns that task's ``utils.py`` reads (Video-MME's ``videoID``/``options``/``answer``,
  LongVideoBench's ``option0..4``/``correct_choice`` ...), installed as the Hugging Face *datasets* cache of
  the task's own ``dataset_path`` and ``dataset_name`` (``$HF_HOME/datasets/<ns>___<name>/<config>/0.0.0/``)
  so that ``datasets.load_dataset("lmms-eval/Video-MME")`` finds it with ``HF_HUB_OFFLINE=1`` and the
  unmodified task YAML loads it;
* a real encoded video for every item where that task's utils look for it (``$HF_HOME/videomme/data/``,
  ``$HF_HOME/mlvu/``, ``$HF_HOME/lvbench/`` ...). The video folder existing is also what tells lmms-eval
  not to download the benchmark.

Then, with ``HF_HOME`` (and ``HF_DATASETS_CACHE=$HF_HOME/datasets``) pointing there and ``HF_HUB_OFFLINE=1``,
``lmms-eval --model mambamia --tasks videomme,...`` runs the real tasks end to end on a laptop. The items
are synthetic (coloured clips and fixed questions): they test the plumbing and each benchmark's own
answer parsing and metric, not a model; their scores mean nothing.

CLI: ``python -m harness.data.minibench --hf-home results/minibench [--tasks videomme lvbench] [--items 3]``
(prints the environment to export).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.naming import camelcase_to_snakecase

from harness.data.video import write_video

LETTERS = "ABCDE"
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 220, 40),
           "white": (240, 240, 240)}


@dataclass(frozen=True)
class MiniBench:
    """One lmms-eval task's dataset: its hub repo and config, the split its YAML scores, and how an item
    and its video path look. ``row(i, video_name, colour, options, answer_index)`` -> one dataset row;
    ``video(i)`` -> the video's path relative to ``$HF_HOME``; ``n_options`` per question."""

    task: str
    repo: str
    config: str
    split: str
    video: Callable[[int], str]
    row: Callable[[int, str, list[str], int], dict[str, Any]]
    n_options: int = 4


def _opts(options: list[str], fmt: str) -> list[str]:
    return [fmt.format(L=LETTERS[k], o=o) for k, o in enumerate(options)]


def _videomme(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    vid = f"{i + 1:03d}"
    return {"video_id": vid, "duration": ["short", "medium", "long"][i % 3], "domain": "Knowledge",
            "sub_category": "Astronomy", "url": f"https://www.youtube.com/watch?v={name}", "videoID": name,
            "question_id": f"{vid}-1", "task_type": "Attribute Perception",
            "question": "What colour fills the screen?", "options": _opts(options, "{L}. {o}"),
            "answer": LETTERS[a]}


MLVU_TYPES = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")


def _mlvu(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    q = "What colour fills the screen?\n" + "\n".join(_opts(options, "({L}) {o}"))
    return {"video_name": name, "duration": 16.0, "question": q, "candidates": options, "answer": LETTERS[a],
            "task_type": MLVU_TYPES[i % len(MLVU_TYPES)], "question_id": f"mlvu_{i}"}


def _lvbench(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    q = "What colour fills the screen?\n" + "\n".join(_opts(options, "({L}) {o}"))
    return {"uid": str(i), "type": ["key information retrieval"], "question": q, "answer": LETTERS[a],
            "time_reference": "00:00-00:02", "key": name, "video_path": name}


def _longvideobench(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    opts = {f"option{k}": (options[k] if k < len(options) else "N/A") for k in range(5)}
    return {"video_id": name.removesuffix(".mp4"), "question": "What colour fills the screen?", **opts,
            "correct_choice": a, "position": [0], "topic_category": "NP-News-Programs",
            "question_category": ["S2E", "E2O", "T3O"][i % 3], "level": "L1-Perception", "id": f"lvb_{i}",
            "video_path": name, "subtitle_path": name.replace(".mp4", "_en.json"), "duration_group": 15,
            "starting_timestamp_for_subtitles": 0.0, "duration": 2.0, "view_count": 0}


def _egoschema(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    return {"question_idx": name, "question": "What colour fills the screen?", "video_idx": name,
            "option": _opts(options, "{L}. {o}"), "answer": str(a)}


def _mvbench(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    return {"video": name, "question": "What colour fills the screen?", "candidates": options,
            "answer": options[a], "accurate_start": 0.0, "accurate_end": 2.0}


def _nextqa(i: int, name: str, options: list[str], a: int) -> dict[str, Any]:
    return {"video": int(name), "frame_count": 16, "width": 32, "height": 32,
            "question": "what colour fills the screen", "answer": a, "qid": i, "type": "DC",
            **{f"a{k}": options[k] for k in range(5)}}


BENCHMARKS: dict[str, MiniBench] = {b.task: b for b in (
    MiniBench("videomme", "lmms-eval/Video-MME", "default", "test", lambda i: f"videomme/data/mme{i:04d}.mp4",
              _videomme),
    MiniBench("mlvu_dev", "sy1998/MLVU_dev", "default", "test", lambda i: f"mlvu/{MLVU_TYPES[i % 7]}_{i}.mp4",
              _mlvu),
    MiniBench("longvideobench_val_v", "longvideobench/LongVideoBench", "default", "validation",
              lambda i: f"datasets/longvideobench/videos/lvb{i:04d}.mp4", _longvideobench),
    MiniBench("lvbench", "lmms-eval/LVBench", "default", "train", lambda i: f"lvbench/lv{i:04d}.mp4", _lvbench),
    MiniBench("egoschema_subset", "lmms-eval/egoschema", "Subset", "test",
              lambda i: f"egoschema/videos/ego{i:04d}.mp4", _egoschema, n_options=5),
    MiniBench("mvbench_action_count", "OpenGVLab/MVBench", "action_count", "train",
              lambda i: f"mvbench_video/perception/videos/mvb{i:04d}.mp4", _mvbench),
    MiniBench("nextqa_mc_test", "lmms-eval/NExTQA", "MC", "test", lambda i: f"nextqa/NExTVideo/{4000 + i}.mp4",
              _nextqa, n_options=5),
)}


def _video_name(b: MiniBench, i: int) -> str:
    """The value the task's row holds for its video (file name, id, or path under the video folder)."""
    p = Path(b.video(i))
    if b.task == "videomme":
        return p.stem
    if b.task in ("egoschema_subset", "nextqa_mc_test"):
        return p.stem
    return p.name


def _install_split(datasets_cache: Path, repo: str, config: str, split: str, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as the datasets-library cache of ``repo``/``config``/``split`` (what
    ``load_dataset(repo, config)`` reloads offline: arrow stream file + dataset_info.json)."""
    ns, name = repo.split("/")
    snake = camelcase_to_snakecase(name)
    root = datasets_cache / f"{ns}___{snake}" / config / "0.0.0"
    ds = datasets.Dataset.from_list(rows)
    with tempfile.TemporaryDirectory(dir=datasets_cache) as tmp:
        ds.save_to_disk(tmp)
        arrow = sorted(glob.glob(os.path.join(tmp, "*.arrow")))
        if len(arrow) != 1:
            raise RuntimeError(f"{repo}: expected one arrow shard, got {arrow}")
        final = root / "minibench"
        staging = Path(tempfile.mkdtemp(dir=datasets_cache, prefix=".stage-"))
        shutil.copy(arrow[0], staging / f"{snake}-{split}.arrow")
        info = ds.info
        info.config_name, info.dataset_name = config, snake
        info.splits = datasets.SplitDict()
        info.splits.add(datasets.SplitInfo(split, num_bytes=0, num_examples=len(ds), dataset_name=snake))
        info.write_to_directory(str(staging))
        if final.exists():
            shutil.rmtree(final)
        root.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
    return final


def _clip(colour: tuple[int, int, int], n_frames: int, size: int, seed: int) -> np.ndarray:
    """(T, size, size, 3) uint8: a coloured screen with a small moving square (real motion to encode)."""
    rng = np.random.default_rng(seed)
    v = np.empty((n_frames, size, size, 3), np.uint8)
    v[:] = np.asarray(colour, np.uint8)
    v += rng.integers(0, 12, size=v.shape, dtype=np.uint8)
    s = max(2, size // 6)
    for t in range(n_frames):
        x = (t * 2) % (size - s)
        v[t, 2: 2 + s, x: x + s] = 0
    return v


def build_minibench(hf_home: str | os.PathLike, tasks: Sequence[str] = tuple(BENCHMARKS), n_items: int = 3,
                    n_frames: int = 16, size: int = 32, fps: float = 8.0, seed: int = 0) -> dict[str, list[dict]]:
    """Write the mini benchmarks ``tasks`` under ``hf_home`` (see the module docstring). Returns the rows
    per task. The answer of item ``i`` is the colour its clip shows; answers cycle through the letters."""
    home = Path(hf_home).resolve()
    cache = home / "datasets"
    cache.mkdir(parents=True, exist_ok=True)
    unknown = [t for t in tasks if t not in BENCHMARKS]
    if unknown:
        raise ValueError(f"minibench: unknown task(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = list(COLOURS)
    out: dict[str, list[dict]] = {}
    for task in tasks:
        b = BENCHMARKS[task]
        rows = []
        for i in range(n_items):
            a = i % b.n_options
            colour = names[(i * 2 + seed) % len(names)]
            options = [o for o in names if o != colour][: b.n_options - 1]
            options.insert(a, colour)
            path = home / b.video(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, _clip(COLOURS[colour], n_frames, size, seed * 1000 + i), fps=fps)
            rows.append(b.row(i, _video_name(b, i), options, a))
        _install_split(cache, b.repo, b.config, b.split, rows)
        out[task] = rows
    return out


def minibench_env(hf_home: str | os.PathLike) -> dict[str, str]:
    """Environment variables under which lmms-eval reads the mini benchmarks at ``hf_home`` offline."""
    home = str(Path(hf_home).resolve())
    return {"HF_HOME": home, "HF_DATASETS_CACHE": os.path.join(home, "datasets"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.data.minibench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="then, e.g.:\n  export $(python -m harness.data.minibench --hf-home "
                                        "results/minibench --env)\n  lmms-eval --model mambamia --model_args "
                                        "checkpoint=RUN --tasks videomme,mlvu_dev --include_path tasks")
    ap.add_argument("--hf-home", required=True, help="the HF_HOME to write (videos + datasets cache)")
    ap.add_argument("--tasks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS), metavar="TASK",
                    help=f"lmms-eval tasks (default all: {', '.join(BENCHMARKS)})")
    ap.add_argument("--items", type=int, default=3, help="items per task")
    ap.add_argument("--frames", type=int, default=16, help="frames per video")
    ap.add_argument("--size", type=int, default=32, help="video width = height (even)")
    ap.add_argument("--env", action="store_true", help="only print the environment (KEY=VALUE lines)")
    a = ap.parse_args(argv)
    if not a.env:
        rows = build_minibench(a.hf_home, a.tasks, n_items=a.items, n_frames=a.frames, size=a.size)
        print(f"wrote {sum(len(r) for r in rows.values())} items of {len(rows)} tasks under {a.hf_home}",
              file=sys.stderr)
    print("\n".join(f"{k}={v}" for k, v in minibench_env(a.hf_home).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
