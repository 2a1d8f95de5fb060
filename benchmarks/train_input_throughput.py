"""Items/s of the training input pipeline on the CPU with 0, 2 and 4 DataLoader workers.

The pipeline of ``harness.train`` without the model: manifest record -> chat template -> token row,
video decoded (``read_video``: the sampled frames, resized for the encoder), batches of 4 in the
run's permutation order, over a generated LLaVA-Video-178K-schema sample (real H.264, 128x128, 48 to
240 frames at 8 fps; no damaged files). Then the same with the tiny patch encoder applied to every
batch in the training process (what a CPU run does per step), so the share of decoding is visible.
Worker counts above the free cores cannot help: the table records the machine's load average.

    python benchmarks/train_input_throughput.py [--items 240] [--frames 16] [--workers 0 2 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=240, help="items read per measurement")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--videos", type=int, default=32)
    a = ap.parse_args()

    from harness.config import DataConfig, EncoderConfig, build
    from harness.data.conversation import ConversationEncoder
    from harness.data.datasets import build_manifest
    from harness.data.encoders import build_encoder
    from harness.data.llava_sample import SUBSET, _frames
    from harness.data.pipeline import DataOrder, StepBatchSampler, TrainItems, VideoSpec, make_loader
    from harness.data.video import write_video
    from harness.model.bpe_tokenizer import train_bpe_tokenizer

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tput_bench_") as tmp:
        import json

        import numpy as np

        rng = np.random.default_rng(0)
        root = Path(tmp) / SUBSET
        (root / "videos").mkdir(parents=True)
        recs = []
        for i in range(a.videos):
            n = int(rng.integers(48, 241))
            write_video(root / "videos" / f"v{i}.mp4", _frames("red", "left", n, 128, rng), fps=8.0)
            recs.append({"id": f"v{i}", "video": f"videos/v{i}.mp4", "conversations": [
                {"from": "human", "value": "<image>\nDescribe the video."},
                {"from": "gpt", "value": "A red square moves to the left across a grey background."}]})
        (root / "cap.json").write_text(json.dumps(recs))
        d = build(DataConfig, {"dataset": "llava_video", "manifest_dir": str(Path(tmp) / "m"),
                               "args": {"path": str(root / "cap.json"), "video_root": str(root)}})
        m = build_manifest(d)
        tok = train_bpe_tokenizer([r["conversations"][1]["value"] for r in recs], 400)
        enc = build_encoder(EncoderConfig(name="tiny", image_size=64, patch_size=8, dim=64, device="cpu"))
        items = TrainItems(m, ConversationEncoder(tok, "chat", n_visual=64),
                           VideoSpec(a.frames, "uniform", None, enc.image_size))
        bs = 4
        steps = a.items // bs
        for encode in (False, True):
            for w in a.workers:
                order = DataOrder(len(m), 0, batch_size=bs, grad_accum=1)
                loader = make_loader(items, StepBatchSampler([order], [0] * steps, 0, 1, 0), workers=w, seed=0)
                t0 = time.perf_counter()
                n = 0
                it = iter(loader)
                first = None
                for batch in it:
                    if first is None:
                        first = time.perf_counter() - t0  # worker start-up + first batch
                    if encode:
                        for x in batch["items"]:
                            enc.encode(x["frames"])
                    n += len(batch["items"])
                dt = time.perf_counter() - t0
                rows.append({"workers": w, "encoder": "tiny (in loop)" if encode else "none", "items": n,
                             "items_per_s": n / dt, "first_batch_s": first, "load_avg_1m": os.getloadavg()[0]})
                print(f"workers={w} encode={encode}: {n / dt:.1f} items/s", file=sys.stderr)
    print_table(rows, ["workers", "encoder", "items", "items_per_s", "first_batch_s", "load_avg_1m"])
    write_json("train_input_throughput", {"machine": machine(), "frames": a.frames, "decode_size": 64,
                                          "source": "128x128 H.264, 48-240 frames", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
