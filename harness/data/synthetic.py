"""Procedurally generated multiple-choice video QA suite ("mia synthetic"), deterministic from a seed.

Six families, two groups, every item a 4-option multiple-choice question with a balanced answer letter:

=============  =======  ===========================================================================
family         group    question (templated, small vocabulary)
=============  =======  ===========================================================================
needle_what    long     which object appeared only briefly ?   (the needle vs. persistent objects)
needle_when    long     when did the <obj> appear ?            (first / second / third / fourth quarter)
count          long     how many times did the <obj> flash ?   (one .. four, among near-miss flashes)
order          dense    what appeared right after the <obj> ?  (4 flashes in sequence)
direction      dense    which way did the <obj> move ?          (left / right / up / down)
location       dense    where did the <obj> appear ?            (top left .. bottom right quadrant)
colour         dense    what colour was the <shape> ?           (red / green / blue / yellow)
=============  =======  ===========================================================================

The families form a ladder. ``colour`` is perception only: one coloured object drifts across half the
video, so the answer survives any pooling (the floor a working pipeline must clear). ``needle_when``
asks for temporal localisation of a brief event; ``count``, ``order``, ``direction``, ``location`` and
``needle_what`` also need the object named in the question bound to what is seen.

Objects are 4 colours x 4 shapes drawn on a drifting noise texture with grey moving blobs ("clutter");
long families also carry ``clutter`` persistent coloured objects. Knobs (:class:`SuiteSpec`): frames per
video (16..1024; per group), event length in frames, clutter, resolution, fps, container (mp4 / webm).

Layout written by :func:`make_suite` (loadable by ``datasets.load_dataset(suite_dir)`` through the card's
``configs`` and by the lmms-eval tasks in ``tasks/mia``)::

    suite/README.md                  dataset card (configs: default + one per family)
    suite/meta.json                  spec, counts, answer histograms, timing, format version
    suite/{train,val,test}.jsonl     all items of a split
    suite/annotations/<family>/{train,val,test}.jsonl
    suite/videos/<split>/<id>.mp4

Each item: ``id, family, group, split, video`` (suite-relative), ``question, options`` (4 str),
``answer`` ("A".."D"), ``answer_index``, ``n_frames, fps, width, height, seed`` and ``events`` (ground
truth, for analysis only). Per-item RNG streams come from ``SeedSequence([seed, split, family, index])``
so train / val / test never share a seed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

FORMAT_VERSION = 1
LETTERS = ("A", "B", "C", "D")
SPLITS = ("train", "val", "test")
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
FAMILIES: dict[str, str] = {
    "needle_what": "long", "needle_when": "long", "count": "long",
    "order": "dense", "direction": "dense", "location": "dense", "colour": "dense",
    "pair_order": "compress", "mark_place": "compress", "flash_when": "compress",
}
GROUPS = {g: [f for f, fg in FAMILIES.items() if fg == g] for g in ("long", "dense", "compress")}
#: what a suite holds unless ``SuiteSpec.families`` says otherwise (the compress group is asked for by name,
#: so that the default suite, and every result made on it, stays as it was)
DEFAULT_FAMILIES = [*GROUPS["long"], *GROUPS["dense"]]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 45, 45), "green": (40, 205, 60), "blue": (55, 95, 250), "yellow": (245, 225, 40),
}
SHAPES = ("square", "circle", "triangle", "cross")
OBJECTS: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]
QUARTERS = ("first quarter", "second quarter", "third quarter", "fourth quarter")
COUNT_WORDS = ("one", "two", "three", "four")
DIRECTIONS = ("left", "right", "up", "down")
PLACES = ("top left", "top right", "bottom left", "bottom right")

QUESTIONS = {
    "needle_what": "which object appeared only briefly ?",
    "needle_when": "when did the {obj} appear ?",
    "count": "how many times did the {obj} flash ?",
    "order": "what appeared right after the {obj} ?",
    "direction": "which way did the {obj} move ?",
    "location": "where did the {obj} appear ?",
    "colour": "what colour was the {shape} ?",
    "pair_order": "how are the two marks placed ?",
    "mark_place": "where in its row is the mark ?",
    "flash_when": "when did the flash appear ?",
}
PAIR_ORDERS = ("red left of blue", "blue left of red", "red above blue", "blue above red")
ROW_PLACES = ("far left", "left of centre", "right of centre", "far right")


POST_PROMPT = "Answer with the option's letter from the given choices directly."


def format_prompt(item: dict[str, Any], pre_prompt: str = "", post_prompt: str = POST_PROMPT) -> str:
    """The text shown to a model for ``item`` (shared by the lmms-eval tasks and the native scorer)::

        which way did the red circle move ?
        A. left
        B. right
        C. up
        D. down
        Answer with the option's letter from the given choices directly.
    """
    lines = [f"{pre_prompt}{item['question']}"]
    lines += [f"{L}. {o}" for L, o in zip(LETTERS, item["options"])]
    if post_prompt:
        lines.append(post_prompt)
    return "\n".join(lines)


def obj_name(o: tuple[str, str]) -> str:
    return f"{o[0]} {o[1]}"


@dataclass
class SuiteSpec:
    """Everything that determines a suite (the same spec and seed give byte-identical files).

    Sizes are totals over all selected families (split evenly, rounded up to a multiple of 4 per family
    so that every answer letter is equally frequent)."""

    seed: int = 0
    n_train: int = 2000
    n_val: int = 120
    n_test: int = 480
    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    frames_long: int = 32  # frames per video, long families (16..1024)
    frames_dense: int = 32  # frames per video, dense families
    event_len: int = 2  # frames a brief event (flash) lasts
    clutter: int = 2  # grey moving blobs; long families also get this many persistent coloured objects
    noise: int = 18  # amplitude of the drifting background texture (0..60)
    size: int = 64  # frame height = width (even, >= 32)
    fps: float = 8.0
    format: str = "mp4"  # mp4 (H.264) | webm (VP8)
    n_events_count: int = 5  # flashes in a `count` video (1..4 of them are the asked object)

    def validate(self) -> None:
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ValueError(f"families: unknown {bad}; allowed: {', '.join(FAMILIES)}")
        for name in ("frames_long", "frames_dense"):
            v = getattr(self, name)
            if not 16 <= v <= 1024:
                raise ValueError(f"{name}: must be in [16, 1024], got {v}")
        if self.event_len < 1:
            raise ValueError(f"event_len: must be >= 1, got {self.event_len}")
        min_frames = min(self.frames_long, self.frames_dense)
        if self.event_len * 4 * 2 > min_frames:
            raise ValueError(f"event_len: {self.event_len} is too long for {min_frames}-frame videos "
                             f"(needs event_len * 8 <= frames)")
        if self.n_events_count < 4 or self.n_events_count * (self.event_len + 1) > self.frames_long:
            raise ValueError(f"n_events_count: must be >= 4 and fit (event_len + 1) each into frames_long, "
                             f"got {self.n_events_count}")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size: must be even and >= 32, got {self.size}")
        if self.clutter < 0 or self.clutter > 8:
            raise ValueError(f"clutter: must be in [0, 8], got {self.clutter}")
        if not 0 <= self.noise <= 60:
            raise ValueError(f"noise: must be in [0, 60], got {self.noise}")
        if self.format not in ("mp4", "webm"):
            raise ValueError(f"format: must be mp4 or webm, got {self.format!r}")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.fps <= 0:
            raise ValueError(f"fps: must be > 0, got {self.fps}")

    def per_family(self, split: str) -> int:
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]
        if n == 0:
            return 0
        k = -(-n // len(self.families))
        return -(-k // 4) * 4

    def frames_for(self, family: str) -> int:
        return self.frames_long if FAMILIES[family] == "long" else self.frames_dense  # compress: dense


# ------------------------------------------------------------------------------------------- drawing
_MASK_CACHE: dict[tuple[str, int], np.ndarray] = {}


def shape_mask(shape: str, s: int) -> np.ndarray:
    """Boolean ``(s, s)`` mask of a shape."""
    key = (shape, s)
    if key in _MASK_CACHE:
        return _MASK_CACHE[key]
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    c = s / 2
    if shape == "square":
        m = np.ones((s, s), bool)
        m[[0, -1], :] = False
        m[:, [0, -1]] = False
    elif shape == "circle":
        m = (yy - c) ** 2 + (xx - c) ** 2 <= (s / 2) ** 2
    elif shape == "triangle":  # apex up
        m = (yy >= 1) & (np.abs(xx - c) <= (yy / s) * (s / 2))
    elif shape == "block":  # a filled cell: the marks of the compress group
        m = np.ones((s, s), bool)
    elif shape == "cross":
        w = max(2, s // 3)
        lo = (s - w) // 2
        m = np.zeros((s, s), bool)
        m[lo:lo + w, :] = True
        m[:, lo:lo + w] = True
    else:
        raise ValueError(f"unknown shape {shape!r}")
    _MASK_CACHE[key] = m
    return m


@dataclass
class Sprite:
    """An object visible on frames ``[start, end)``; ``xy`` is an (T, 2) array of top-left (x, y)."""

    colour: tuple[int, int, int]
    shape: str
    size: int
    start: int
    end: int
    xy: np.ndarray


def render(spec: SuiteSpec, n_frames: int, sprites: list[Sprite], rng: np.random.Generator) -> np.ndarray:
    """Draw a clip: drifting noise texture, grey moving blobs, then ``sprites`` in order.
    Returns uint8 ``(T, size, size, 3)``."""
    S = spec.size
    tex = (48 + rng.integers(-spec.noise, spec.noise + 1, size=(2 * S, 2 * S, 1))).astype(np.int16)
    tex = np.repeat(tex, 3, axis=2)
    tex[..., 2] += 6  # a slightly blue-ish dark background
    v = rng.uniform(-1.0, 1.0, size=2)
    frames = np.empty((n_frames, S, S, 3), np.uint8)
    blobs = []
    for _ in range(spec.clutter):
        bs = max(4, S // 9)
        grey = int(rng.integers(95, 170))
        pos = rng.uniform(0, S - bs, size=2)
        vel = rng.uniform(-1.5, 1.5, size=2)
        blobs.append((bs, grey, pos, vel, SHAPES[int(rng.integers(0, 2))]))
    for t in range(n_frames):
        ox = int(round(S / 2 + v[0] * t)) % S
        oy = int(round(S / 2 + v[1] * t)) % S
        f = tex[oy:oy + S, ox:ox + S].copy()
        for bs, grey, pos, vel, shp in blobs:
            p = pos + vel * t
            p = np.abs(np.mod(p, 2 * (S - bs)))  # bounce
            p = np.where(p > S - bs, 2 * (S - bs) - p, p)
            _paste(f, shape_mask(shp, bs), (grey, grey, grey), int(p[0]), int(p[1]))
        for sp in sprites:
            if sp.start <= t < sp.end:
                _paste(f, shape_mask(sp.shape, sp.size), sp.colour, int(sp.xy[t, 0]), int(sp.xy[t, 1]))
        frames[t] = np.clip(f, 0, 255).astype(np.uint8)
    return frames


def _paste(f: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], x: int, y: int) -> None:
    H, W = f.shape[:2]
    s = mask.shape[0]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + s, W), min(y + s, H)
    if x0 >= x1 or y0 >= y1:
        return
    m = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    f[y0:y1, x0:x1][m] = colour


# ------------------------------------------------------------------------------------------- families
def _obj_size(spec: SuiteSpec) -> int:
    return max(6, spec.size // 5)


def _static(x: float, y: float, T: int) -> np.ndarray:
    return np.tile(np.array([[x, y]], np.float64), (T, 1))


class _Placer:
    """Random non-overlapping boxes (best effort) inside a region of the frame."""

    def __init__(self, spec: SuiteSpec, rng: np.random.Generator):
        self.S, self.s, self.rng, self.boxes = spec.size, _obj_size(spec), rng, []

    def place(self, region: tuple[float, float, float, float] = (0, 0, 1, 1)) -> tuple[int, int]:
        x0, y0, x1, y1 = region
        lo_x, hi_x = int(x0 * self.S) + 1, int(x1 * self.S) - self.s - 1
        lo_y, hi_y = int(y0 * self.S) + 1, int(y1 * self.S) - self.s - 1
        best = None
        for _ in range(30):
            x = int(self.rng.integers(lo_x, max(lo_x, hi_x) + 1))
            y = int(self.rng.integers(lo_y, max(lo_y, hi_y) + 1))
            best = (x, y)
            if all(abs(x - bx) >= self.s + 1 or abs(y - by) >= self.s + 1 for bx, by in self.boxes):
                break
        assert best is not None
        self.boxes.append(best)
        return best


def _sprite(spec: SuiteSpec, o: tuple[str, str], start: int, end: int, xy: np.ndarray) -> Sprite:
    return Sprite(COLOURS[o[0]], o[1], _obj_size(spec), start, end, xy)


def _distinct_objects(rng: np.random.Generator, k: int, exclude: Iterable[tuple[str, str]] = ()) -> list:
    pool = [o for o in OBJECTS if o not in set(exclude)]
    idx = rng.choice(len(pool), size=k, replace=False)
    return [pool[i] for i in idx]


def _near_miss(rng: np.random.Generator, target: tuple[str, str]) -> tuple[str, str]:
    """An object sharing exactly one attribute (colour or shape) with ``target``."""
    if rng.random() < 0.5:
        return (target[0], str(rng.choice([s for s in SHAPES if s != target[1]])))
    return (str(rng.choice([c for c in COLOURS if c != target[0]])), target[1])


def _persistent(spec: SuiteSpec, rng: np.random.Generator, placer: _Placer, T: int,
                exclude: list[tuple[str, str]]) -> tuple[list[Sprite], list[tuple[str, str]]]:
    objs = _distinct_objects(rng, spec.clutter, exclude) if spec.clutter else []
    sprites = []
    for o in objs:
        x, y = placer.place()
        sprites.append(_sprite(spec, o, 0, T, _static(x, y, T)))
    return sprites, objs


def _gen_item(spec: SuiteSpec, family: str, T: int, pos: int, rng: np.random.Generator) -> dict[str, Any]:
    """One item: returns dict with ``sprites, question, options, events`` (answer at index ``pos``)."""
    L = spec.event_len
    placer = _Placer(spec, rng)
    sprites: list[Sprite] = []
    events: list[dict[str, Any]] = []

    def flash(o, start, xy=None, region=(0, 0, 1, 1)):
        if xy is None:
            x, y = placer.place(region)
            xy = _static(x, y, T)
        sprites.append(_sprite(spec, o, start, start + L, xy))
        events.append({"object": obj_name(o), "start": int(start), "end": int(start + L),
                       "x": int(xy[start, 0]), "y": int(xy[start, 1])})

    if family == "needle_what":
        target = OBJECTS[int(rng.integers(len(OBJECTS)))]
        bg, bg_objs = _persistent(spec, rng, placer, T, [target])
        sprites += bg
        flash(target, int(rng.integers(1, T - L)))
        others = bg_objs[:3] + _distinct_objects(rng, 3 - min(3, len(bg_objs)), [target, *bg_objs])
        rng.shuffle(others)
        options = [obj_name(o) for o in others]
        options.insert(pos, obj_name(target))
        question = QUESTIONS[family]
    elif family == "needle_when":
        target = OBJECTS[int(rng.integers(len(OBJECTS)))]
        bg, _ = _persistent(spec, rng, placer, T, [target])
        sprites += bg
        q0, q1 = pos * T // 4, (pos + 1) * T // 4
        flash(target, int(rng.integers(q0, q1 - L + 1)))
        options, question = list(QUARTERS), QUESTIONS[family].format(obj=obj_name(target))
    elif family == "count":
        target = OBJECTS[int(rng.integers(len(OBJECTS)))]
        k = pos + 1
        E = spec.n_events_count
        kinds = [target] * k + [_near_miss(rng, target) for _ in range(E - k)]
        rng.shuffle(kinds)
        bg, _ = _persistent(spec, rng, placer, T, [target])
        sprites += bg
        slot = T / E
        for i, o in enumerate(kinds):
            a, b = int(np.ceil(i * slot)), int(np.floor((i + 1) * slot)) - L
            flash(o, int(rng.integers(a, max(a, b) + 1)))
        options, question = list(COUNT_WORDS), QUESTIONS[family].format(obj=obj_name(target))
    elif family == "order":
        seq = _distinct_objects(rng, 4)
        slot = T / 4
        for i, o in enumerate(seq):
            a, b = int(np.ceil(i * slot)), int(np.floor((i + 1) * slot)) - L
            flash(o, int(rng.integers(a, max(a, b) + 1)))
        j = int(rng.integers(0, 3))  # ask about event j, answer is event j + 1
        answer = seq[j + 1]
        others = [o for i, o in enumerate(seq) if i not in (j, j + 1)]
        others += _distinct_objects(rng, 1, seq)
        rng.shuffle(others)
        options = [obj_name(o) for o in others]
        options.insert(pos, obj_name(answer))
        question = QUESTIONS[family].format(obj=obj_name(seq[j]))
    elif family == "direction":
        S, s = spec.size, _obj_size(spec)
        M = min(max(4, 3 * L), T - 2)  # frames the move lasts
        objs = _distinct_objects(rng, 2 if spec.clutter else 1)
        dirs = [pos] + [int(rng.choice([d for d in range(4) if d != pos]))]
        for o, d in zip(objs, dirs):
            start = int(rng.integers(0, T - M + 1))
            dist = 0.55 * (S - s)
            sign = -1 if d in (0, 2) else 1  # left / up move towards 0
            axis = 0 if d in (0, 1) else 1
            a0 = (S - s - dist) / 2 + (dist if sign < 0 else 0) + rng.uniform(-0.2, 0.2) * (S - s - dist)
            other = rng.uniform(2, S - s - 2)
            xy = np.zeros((T, 2))
            prog = np.clip((np.arange(T) - start) / max(1, M - 1), 0, 1)
            xy[:, axis] = a0 + sign * dist * prog
            xy[:, 1 - axis] = other
            sprites.append(_sprite(spec, o, start, start + M, xy))
            events.append({"object": obj_name(o), "start": start, "end": start + M, "direction": DIRECTIONS[d]})
        options, question = list(DIRECTIONS), QUESTIONS[family].format(obj=obj_name(objs[0]))
    elif family == "location":
        objs = _distinct_objects(rng, 4)  # objs[0] is asked about; the others flash in other quadrants
        quads = [pos] + [q for q in rng.permutation(4).tolist() if q != pos]
        slot = T / 4
        order = rng.permutation(4)
        for o, q, i in zip(objs, quads, order):
            a, b = int(np.ceil(i * slot)), int(np.floor((i + 1) * slot)) - L
            region = ((q % 2) * 0.5, (q // 2) * 0.5, (q % 2) * 0.5 + 0.5, (q // 2) * 0.5 + 0.5)
            flash(o, int(rng.integers(a, max(a, b) + 1)), region=region)
            events[-1]["place"] = PLACES[q]
        options, question = list(PLACES), QUESTIONS[family].format(obj=obj_name(objs[0]))
    elif family == "colour":
        target = (list(COLOURS)[pos], str(rng.choice(SHAPES)))
        M = T // 2  # visible for half the video, drifting slowly
        start = int(rng.integers(0, T - M + 1))
        x, y = placer.place((0.2, 0.2, 0.8, 0.8))
        v = rng.uniform(-0.3, 0.3, size=2)
        xy = np.array([x, y], np.float64) + v[None] * (np.arange(T)[:, None] - start)
        sprites.append(_sprite(spec, target, start, start + M, xy))
        events.append({"object": obj_name(target), "start": start, "end": start + M})
        options, question = list(COLOURS), QUESTIONS[family].format(shape=target[1])
    elif family in GROUPS["compress"]:
        return _gen_compress(spec, family, T, pos, rng)
    else:  # pragma: no cover - validated before
        raise ValueError(family)
    assert len(options) == 4 and len(set(options)) == 4, (family, options)
    return {"sprites": sprites, "question": question, "options": options, "events": events}


def _mark(spec: SuiteSpec, colour: str, row: int, col: int, start: int, end: int, T: int) -> Sprite:
    """A filled mark on cell (row, col) of the 8 x 8 grid of the frame (one patch of the tiny encoder at its
    default 64 px / 8 px patches), visible on frames [start, end)."""
    cell = spec.size // 8
    return Sprite(COLOURS[colour], "block", cell, start, end, _static(col * cell, row * cell, T))


def _gen_compress(spec: SuiteSpec, family: str, T: int, pos: int, rng: np.random.Generator) -> dict[str, Any]:
    """The compress group: one fixed question and fixed options per family, so the question only names the
    family and nothing has to be bound; the answer (index ``pos``) is what compression keeps or loses.
    Rows 2k and 2k + 1 of the 8 x 8 grid are one spatial period of 16 patches (the tiny preset's period)."""
    sprites: list[Sprite] = []
    events: list[dict[str, Any]] = []
    if family == "pair_order":
        k = int(rng.integers(0, 4))  # the period (pair of rows) both marks lie in
        if pos < 2:  # side by side in one row
            row, c1 = 2 * k + int(rng.integers(0, 2)), int(rng.integers(0, 7))
            cells = [(row, c1), (row, c1 + 1)]  # adjacent: which patch holds which colour, nothing else
        else:  # one above the other in one column
            col = int(rng.integers(0, 8))
            cells = [(2 * k, col), (2 * k + 1, col)]
        first, second = ("red", "blue") if pos in (0, 2) else ("blue", "red")
        for colour, (r, c) in zip((first, second), cells):
            sprites.append(_mark(spec, colour, r, c, 0, T, T))
            events.append({"object": f"{colour} mark", "row": r, "col": c, "start": 0, "end": T})
        options = list(PAIR_ORDERS)
    elif family == "mark_place":
        row, col = int(rng.integers(0, 8)), 2 * pos + int(rng.integers(0, 2))
        sprites.append(_mark(spec, "red", row, col, 0, T, T))
        events.append({"object": "red mark", "row": row, "col": col, "start": 0, "end": T})
        options = list(ROW_PLACES)
    elif family == "flash_when":
        L = max(spec.event_len, T // 8 + 1)  # long enough that T / 2 frames sampled uniformly always see it
        q0, q1 = pos * T // 4, (pos + 1) * T // 4
        start = int(rng.integers(q0, max(q0, q1 - L) + 1))
        row, col = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        sprites.append(_mark(spec, "yellow", row, col, start, start + L, T))
        events.append({"object": "yellow mark", "row": row, "col": col, "start": start, "end": start + L})
        options = list(QUARTERS)
    else:  # pragma: no cover - validated before
        raise ValueError(family)
    return {"sprites": sprites, "question": QUESTIONS[family], "options": options, "events": events}


def item_seed(seed: int, split: str, family: str, index: int) -> int:
    """The per-item seed: distinct streams per (split, family, index) so splits never share a seed."""
    ss = np.random.SeedSequence([seed, SPLITS.index(split), list(FAMILIES).index(family), index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)


def _make_one(args: tuple[SuiteSpec, str, str, int, int, str]) -> dict[str, Any]:
    spec, split, family, index, pos, out_dir = args
    from harness.data.video import write_video  # lazy: heavy (torch); `harness.data --help` imports this module

    seed = item_seed(spec.seed, split, family, index)
    rng = np.random.default_rng(seed)
    T = spec.frames_for(family)
    g = _gen_item(spec, family, T, pos, rng)
    frames = render(spec, T, g["sprites"], rng)
    item_id = f"{family}-{split}-{index:05d}"
    rel = f"videos/{split}/{item_id}.{spec.format}"
    # one encoder thread: parallelism is across videos, and the bytes stay deterministic
    write_video(Path(out_dir) / rel, frames, fps=spec.fps, options={"threads": "1"})
    return {
        "id": item_id, "family": family, "group": FAMILIES[family], "split": split, "video": rel,
        "question": g["question"], "options": g["options"], "answer": LETTERS[pos], "answer_index": pos,
        "n_frames": T, "fps": spec.fps, "width": spec.size, "height": spec.size, "seed": seed,
        "events": g["events"],
    }


def _answer_positions(spec: SuiteSpec, split: str, family: str, n: int) -> np.ndarray:
    """Balanced answer positions: each of A..D exactly n/4 times, in a seeded random order."""
    rng = np.random.default_rng(item_seed(spec.seed, split, family, 10_000_000))
    return rng.permutation(np.arange(n) % 4)


def make_suite(out: str | os.PathLike, spec: SuiteSpec | None = None, workers: int | None = None,
               overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Generate the suite into ``out`` (built in ``out.partial`` and renamed when complete).

    Returns the ``meta.json`` dict (with ``seconds`` the wall time)."""
    spec = spec or SuiteSpec()
    spec.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for split in SPLITS:
        (tmp / "videos" / split).mkdir(parents=True, exist_ok=True)
    jobs = []
    for split in SPLITS:
        for fam in spec.families:
            n = spec.per_family(split)
            for i, pos in enumerate(_answer_positions(spec, split, fam, n)):
                jobs.append((spec, split, fam, i, int(pos), str(tmp)))
    workers = workers or min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    items: list[dict[str, Any]]
    bar = _bar(len(jobs), progress, f"make-synthetic -> {out}")
    if workers <= 1:
        items = []
        for j in jobs:
            items.append(_make_one(j))
            bar.update(1)
    else:
        # spawn, not fork: forking a process that already runs threads (torch, FFmpeg, tqdm, a test
        # runner) can leave a child blocked forever on a lock that was held at fork time
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            items = []
            for it in ex.map(_make_one, jobs, chunksize=16):
                items.append(it)
                bar.update(1)
    bar.close()
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for it in items:
        by_split[it["split"]].append(it)
    for split, rows in by_split.items():
        _write_jsonl(tmp / f"{split}.jsonl", rows)
        for fam in spec.families:
            d = tmp / "annotations" / fam
            d.mkdir(parents=True, exist_ok=True)
            _write_jsonl(d / f"{split}.jsonl", [r for r in rows if r["family"] == fam])
    seconds = time.perf_counter() - t0
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "families": {f: FAMILIES[f] for f in spec.families},
        "counts": {s: dict(Counter(r["family"] for r in by_split[s])) for s in SPLITS},
        "answers": {s: dict(sorted(Counter(r["answer"] for r in by_split[s]).items())) for s in SPLITS},
        "seconds": round(seconds, 3),
        "workers": workers,
    }
    (tmp / "README.md").write_text(_card(spec))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def _bar(total: int, enabled: bool, desc: str):
    return tqdm(total=total, desc=desc, disable=not enabled, unit="video")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def _card(spec: SuiteSpec) -> str:
    """Dataset card whose ``configs`` make ``datasets.load_dataset(suite_dir[, family])`` work (empty
    splits are left out: ``datasets`` refuses a split without rows)."""

    def cfg(name: str, prefix: str) -> str:
        lines = [f"- config_name: {name}", "  data_files:"]
        for s in SPLITS:
            if spec.per_family(s):
                lines += [f"  - split: {HF_SPLIT_NAMES[s]}", f"    path: {prefix}{s}.jsonl"]
        return "\n".join(lines)

    configs = [cfg("default", "")] + [cfg(f, f"annotations/{f}/") for f in spec.families]
    return ("---\nconfigs:\n" + "\n".join(configs) + "\n---\n\n# MambaMia synthetic video QA suite\n\n"
            "Generated by `python -m harness.data make-synthetic`; see docs/data.md and meta.json.\n"
            "Load with `datasets.load_dataset(<this dir>)` (default config: all families) or\n"
            "`datasets.load_dataset(<this dir>, '<family>')`. Video paths are relative to this dir.\n")


# ------------------------------------------------------------------------------------------- reading
def load_meta(suite_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(suite_dir) / "meta.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no synthetic suite here; run `python -m harness.data make-synthetic "
                                f"--out {suite_dir}`")
    return json.loads(p.read_text())


def spec_from(overrides: dict[str, Any], where: str = "data.synthetic") -> SuiteSpec:
    """A :class:`SuiteSpec` with ``overrides`` (field: value) over the defaults; unknown fields and bad
    values raise ValueError naming ``where.<field>``."""
    fields = SuiteSpec.__dataclass_fields__
    for k in overrides:
        if k not in fields:
            raise ValueError(f"{where}.{k}: unknown suite field; allowed: {', '.join(fields)}")
    spec = SuiteSpec(**overrides)
    try:
        spec.validate()
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None
    return spec


def check_spec(suite_dir: str | os.PathLike, overrides: dict[str, Any], where: str = "data.synthetic") -> None:
    """Raise ValueError if the suite in ``suite_dir`` was generated with other values than ``overrides``
    (a study that asks for a clean suite must not silently train on the default one)."""
    if not overrides:
        return
    have = load_meta(suite_dir).get("spec", {})
    want = asdict(spec_from(overrides, where))
    bad = [f"{k}: suite has {have.get(k)!r}, {where} asks {want[k]!r}" for k in overrides if have.get(k) != want[k]]
    if bad:
        raise ValueError(f"{Path(suite_dir) / 'meta.json'}: generated with another spec ({'; '.join(bad)}); "
                         f"point data.suite at another folder (the sweep generates it) or delete this one")


def expand_families(names: Iterable[str]) -> set[str]:
    """Family names and group names ("long" / "dense") -> the set of family names."""
    want: set[str] = set()
    for f in names:
        if f in GROUPS:
            want.update(GROUPS[f])
        elif f in FAMILIES:
            want.add(f)
        else:
            raise ValueError(f"families: unknown {f!r}; allowed: {', '.join([*FAMILIES, *GROUPS])}")
    return want


def load_items(suite_dir: str | os.PathLike, split: str, families: Iterable[str] | None = None
               ) -> list[dict[str, Any]]:
    """Items of ``split`` ("train" | "val" | "test"; "validation" is accepted) with ``video`` made
    absolute. ``families`` (names, or the group names "long" / "dense") filters; None or empty: all."""
    split = {"validation": "val"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"split: unknown {split!r}; allowed: {', '.join(SPLITS)}")
    root = Path(suite_dir).resolve()
    p = root / f"{split}.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing; run `python -m harness.data make-synthetic --out {suite_dir}`")
    want = expand_families(families) if families else None
    out = []
    with open(p) as fh:
        for ln, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                it = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{ln}: bad JSON ({e})") from e
            if want is not None and it["family"] not in want:
                continue
            it["video"] = str(root / it["video"])
            out.append(it)
    return out


def balanced_head(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` items taking families round-robin (so a cap keeps every family)."""
    if n <= 0 or n >= len(items):
        return items
    by_fam: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_fam.setdefault(it["family"], []).append(it)
    out: list[dict[str, Any]] = []
    queues = [iter(v) for v in by_fam.values()]
    while len(out) < n and queues:
        for q in list(queues):
            nxt = next(q, None)
            if nxt is None:
                queues.remove(q)
                continue
            out.append(nxt)
            if len(out) == n:
                break
    return out


__all__ = ["SuiteSpec", "make_suite", "load_items", "expand_families", "load_meta", "FAMILIES", "GROUPS",
           "LETTERS", "SPLITS", "OBJECTS", "QUESTIONS", "item_seed", "render", "format_prompt", "POST_PROMPT",
           "balanced_head"]

