"""A small dataset in LLaVA-Video-178K's exact schema, generated offline (tests, the offline twins).

``make_llava_sample(out)`` writes, like one LLaVA-Video-178K subset folder::

    out/0_30_s_synthetic_v0_1/
        videos/v0000.mp4 ...            real H.264 files of varied lengths (one long one)
        0_30_s_synthetic_v0_1_cap_processed.json      JSON array: caption records (one turn)
        0_30_s_synthetic_oe_v0_1_qa_processed.jsonl   JSONL: multi-turn open-ended QA records
    out/mixture.yaml                    LLaVA-NeXT-style data YAML over both files

Each video is a coloured square moving left / right / up / down on a grey background, so the answers
("The square is red.", "It moves to the left.") depend on the pixels. Records use ``<image>`` as
LLaVA-Video-178K does, ``video`` relative to the subset folder. Damaged on purpose: a truncated mp4, a
file of random bytes, an empty file and a record whose video does not exist; malformed records: turns
that do not alternate, a record without ``video``, two placeholders, and one JSONL line that is not JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.data.video import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SUBSET = "0_30_s_synthetic_v0_1"
CAP_FILE = "0_30_s_synthetic_v0_1_cap_processed.json"
QA_FILE = "0_30_s_synthetic_oe_v0_1_qa_processed.jsonl"


def _frames(colour: str, direction: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, size, size, 3): a square crossing the frame in ``direction`` over the clip."""
    out = np.full((n, size, size, 3), 110, dtype=np.uint8)
    out += rng.integers(0, 12, size=(1, size, size, 3), dtype=np.uint8)
    s = size // 5
    dx, dy = DIRECTIONS[direction]
    for t in range(n):
        frac = t / max(1, n - 1)
        cx = size // 2 + int(dx * (frac - 0.5) * (size - 2 * s))
        cy = size // 2 + int(dy * (frac - 0.5) * (size - 2 * s))
        out[t, max(0, cy - s // 2): cy + s // 2, max(0, cx - s // 2): cx + s // 2] = COLOURS[colour]
    return out


def make_llava_sample(out: str | os.PathLike, n_videos: int = 24, size: int = 64, fps: float = 8.0,
                      long_frames: int = 2400, seed: int = 0) -> dict[str, Any]:
    """Write the sample (see the module docstring); returns ``{root, mixture, cap, qa, n_videos,
    damaged, malformed}``. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    root = Path(out)
    sub = root / SUBSET
    (sub / "videos").mkdir(parents=True, exist_ok=True)
    cap, qa = [], []
    names = list(COLOURS)
    dirs = list(DIRECTIONS)
    for i in range(n_videos):
        colour, direction = names[i % 4], dirs[(i // 4) % 4]
        n = long_frames if i == 0 else int(rng.integers(8, 49))
        rel = f"videos/v{i:04d}.mp4"
        write_video(sub / rel, _frames(colour, direction, n, size, rng), fps=fps)
        vid = f"synthetic_v{i:04d}"
        cap.append({"id": vid, "data_source": SUBSET, "video": rel, "conversations": [
            {"from": "human", "value": "<image>\nDescribe what happens in the video."},
            {"from": "gpt", "value": f"A {colour} square moves to the {direction}."}]})
        qa.append({"id": f"{vid}_qa", "data_source": SUBSET, "video": rel, "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?"},
            {"from": "gpt", "value": f"The square is {colour}."},
            {"from": "human", "value": "Which way does it move?"},
            {"from": "gpt", "value": f"It moves to the {direction}."}]})
    # damaged videos (records are otherwise valid)
    good = (sub / "videos" / "v0001.mp4").read_bytes()
    (sub / "videos" / "cut.mp4").write_bytes(good[: len(good) // 2])
    (sub / "videos" / "noise.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (sub / "videos" / "empty.mp4").write_bytes(b"")
    damaged = ["videos/cut.mp4", "videos/noise.mp4", "videos/empty.mp4", "videos/missing.mp4"]
    for k, rel in enumerate(damaged):
        cap.append({"id": f"damaged_{k}", "data_source": SUBSET, "video": rel, "conversations": [
            {"from": "human", "value": "<image>\nDescribe what happens in the video."},
            {"from": "gpt", "value": "Nothing."}]})
    malformed = [
        {"id": "bad_turns", "video": "videos/v0002.mp4", "conversations": [
            {"from": "gpt", "value": "I speak first."}, {"from": "human", "value": "<image>\nHi"}]},
        {"id": "bad_no_video", "image": "x.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "An image."}]},
        {"id": "bad_two_videos", "video": "videos/v0003.mp4", "conversations": [
            {"from": "human", "value": "<image>\n<image>\nCompare."}, {"from": "gpt", "value": "Same."}]},
    ]
    with open(sub / CAP_FILE, "w") as fh:
        json.dump(cap + malformed[:1], fh, indent=1)
    with open(sub / QA_FILE, "w") as fh:
        for r in qa + malformed[1:]:
            fh.write(json.dumps(r) + "\n")
        fh.write('{"id": "bad_json", "video": \n')
    mixture = {"datasets": [
        {"json_path": f"{SUBSET}/{CAP_FILE}", "video_folder": SUBSET, "sampling_strategy": "all", "name": "cap"},
        {"json_path": f"{SUBSET}/{QA_FILE}", "video_folder": SUBSET, "sampling_strategy": "all", "name": "qa"},
    ]}
    (root / "mixture.yaml").write_text(yaml.safe_dump(mixture, sort_keys=False))
    return {"root": str(root), "mixture": str(root / "mixture.yaml"), "cap": str(sub / CAP_FILE),
            "qa": str(sub / QA_FILE), "n_videos": n_videos, "damaged": damaged,
            "malformed": [m["id"] for m in malformed] + ["bad_json"]}


__all__ = ["make_llava_sample"]
