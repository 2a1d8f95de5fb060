"""Host peak RSS of the streaming training input against the dataset's size (it must stay flat).

For each size N a JSON array of N LLaVA-Video-178K-schema records (~1 KB of text each, as the real
caption records; videos cycled over the generated sample's real H.264 files) is written; then, each in
a fresh process so that peaks do not mix:

* ``stream``: what ``harness.train`` does: build the manifest (the file streamed object by object into
  records.jsonl + a memory-mapped offset table), then read 64 items through the DataLoader path
  (record -> chat template -> token row, video decoded to 8 frames, random-permutation order over all N);
* ``load_all``: the alternative, ``json.load`` of the file into a list of records (what a trainer holding
  the dataset in memory does, e.g. LLaVA-NeXT's LazySupervisedDataset).

Peak RSS is ``ru_maxrss`` of that process (the process's baseline, Python + torch + transformers, is
the ``stream`` value at the smallest N).

    python benchmarks/train_input_memory.py                    # N = 1k, 10k, 100k
    python benchmarks/train_input_memory.py --sizes 1000 300000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

FILLER = ("The video shows a person walking along a busy street while cars pass by on the left; the camera "
          "follows them as they stop at a crossing, look around and then continue towards a small park. ")


def write_records(path: Path, n: int, videos: list[str]) -> None:
    with open(path, "w") as fh:
        fh.write("[")
        for i in range(n):
            rec = {"id": f"r{i}", "video": videos[i % len(videos)], "data_source": "bench", "conversations": [
                {"from": "human", "value": "<image>\nDescribe the video in detail."},
                {"from": "gpt", "value": FILLER * 5 + f"(record {i})"}]}
            fh.write(("," if i else "") + json.dumps(rec))
        fh.write("]")


def child(mode: str, path: str, root: str, work: str) -> dict:
    t0 = time.perf_counter()
    if mode == "load_all":
        with open(path) as fh:
            recs = json.load(fh)
        n = len(recs)
    else:
        import torch

        from harness.config import DataConfig, build
        from harness.data.conversation import ConversationEncoder
        from harness.data.datasets import build_manifest
        from harness.data.pipeline import DataOrder, StepBatchSampler, TrainItems, VideoSpec, make_loader
        from harness.model.bpe_tokenizer import train_bpe_tokenizer

        torch.set_num_threads(1)
        d = build(DataConfig, {"dataset": "llava_video", "args": {"path": path, "video_root": root},
                               "manifest_dir": work})
        m = build_manifest(d)
        n = len(m)
        tok = train_bpe_tokenizer([FILLER], 512)
        items = TrainItems(m, ConversationEncoder(tok, "chat", n_visual=64), VideoSpec(8, "uniform", None, 32))
        order = DataOrder(n, 0, batch_size=4, grad_accum=1)
        for _ in make_loader(items, StepBatchSampler([order], [0] * 16, 0, 1, 0), workers=0, seed=0):
            pass
    return {"mode": mode, "n": n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds": round(time.perf_counter() - t0, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--child", nargs=4, metavar=("MODE", "PATH", "ROOT", "WORK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    from harness.data.llava_sample import SUBSET, make_llava_sample

    rows = []
    with tempfile.TemporaryDirectory(prefix="mem_bench_") as tmp:
        info = make_llava_sample(Path(tmp) / "sample", n_videos=8, long_frames=64)
        root = str(Path(info["root"]) / SUBSET)
        videos = [f"videos/v{i:04d}.mp4" for i in range(8)]
        for n in a.sizes:
            path = Path(tmp) / f"records_{n}.json"
            write_records(path, n, videos)
            size_mib = path.stat().st_size / 2**20
            for mode in ("stream", "load_all"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), root, str(Path(tmp) / "m")],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({**row, "file_mib": round(size_mib, 1)})
                print(f"N={n} {mode}: {row['peak_rss_mib']:.0f} MiB peak ({row['seconds']} s)", file=sys.stderr)
            path.unlink()
    print_table(rows, ["n", "file_mib", "mode", "peak_rss_mib", "seconds"])
    write_json("train_input_memory", {"machine": machine(), "rows": rows,
                                      "note": "peak RSS of a fresh process per (mode, N); see the docstring"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
