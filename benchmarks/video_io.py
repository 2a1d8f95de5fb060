"""Video I/O throughput: decode + sample, frozen-encoder encode, and a warm feature cache vs decoding.

    python benchmarks/video_io.py                       # generated suites (64px/32f and 224px/128f)
    python benchmarks/video_io.py --suite results/data/mia_synthetic --limit 300

For each case it measures, over the same videos:
  decode   read_video(n_frames, size=encoder size): sampled frames/s and source frames decoded/s
  encode   the frozen encoder on those frames: frames/s
  cold     ensure_features on an empty cache (decode + encode + atomic write): videos/s
  warm     ensure_features again (cache reads only, no decoding): videos/s, and speedup = cold / warm
and, for one fixed frame count over videos of growing length (``--lengths``, seconds at 25 fps, H.264
with a 2 s GOP), the decode time of ``read_video`` decoding every frame up to the last one wanted
(``seek=False``, the old way) beside seeking to each wanted frame (``seek=None``, the default): the first
grows with the length, the second stays flat.
Prints tables and writes JSON to results/benchmarks/video_io.json (``--out``).

    python benchmarks/video_io.py --only-length --lengths 10 60 300 900
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import DataConfig, EncoderConfig  # noqa: E402
from harness.data.encoders import build_encoder  # noqa: E402
from harness.data.features import ensure_features  # noqa: E402
from harness.data.synthetic import SuiteSpec, load_items, make_suite  # noqa: E402
from harness.data.video import probe_video, read_video  # noqa: E402


def bench_case(name: str, suite: Path, n_frames: int, enc_cfg: EncoderConfig, limit: int, workdir: Path
               ) -> dict:
    items = load_items(suite, "test")[:limit] if limit else load_items(suite, "test")
    enc = build_encoder(enc_cfg)
    src_frames = sum(probe_video(it["video"]).n_frames for it in items)

    t0 = time.perf_counter()
    clips = [read_video(it["video"], n_frames, size=enc.image_size) for it in items]
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in clips:
        enc.encode(c)
    t_enc = time.perf_counter() - t0

    # cold / warm through the real cache filler (a throwaway suite dir with only these test items)
    sub = workdir / f"{name}-suite"
    (sub).mkdir(parents=True, exist_ok=True)
    with open(sub / "test.jsonl", "w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")
    cache = workdir / f"{name}-cache"
    data = DataConfig(suite=str(sub), n_frames=n_frames, cache_dir=str(cache))
    t0 = time.perf_counter()
    cold = ensure_features(data, enc_cfg, splits=("test",), progress=False, encoder=enc)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = ensure_features(data, enc_cfg, splits=("test",), progress=False, encoder=enc)
    t_warm = time.perf_counter() - t0
    assert warm.stats["hits"] == len(items) and warm.stats["computed"] == 0, warm.stats
    assert cold.stats["computed"] == len(items), cold.stats
    n = len(items)
    first = probe_video(items[0]["video"])
    return {
        "case": name, "videos": n, "source": f"{first.width}x{first.height} {first.codec}",
        "source_frames_per_video": src_frames / n, "n_frames": n_frames, "encoder": enc.encoder_id,
        "feature_shape": list(cold[items[0]["id"]].shape),
        "decode_s": t_dec, "decode_sampled_fps": n * n_frames / t_dec, "decode_source_fps": src_frames / t_dec,
        "encode_s": t_enc, "encode_fps": n * n_frames / t_enc,
        "cold_s": t_cold, "cold_videos_per_s": n / t_cold,
        "warm_s": t_warm, "warm_videos_per_s": n / t_warm, "warm_speedup": t_cold / t_warm,
    }


def bench_length(seconds: list[float], n_frames: int, workdir: Path, repeats: int = 3, size: int = 64) -> list[dict]:
    """Decode time of ``n_frames`` frames from videos of each length: sequential vs seek (same run)."""
    import numpy as np

    from harness.data.video import write_video

    rows = []
    for sec in seconds:
        n = int(sec * 25)
        path = workdir / f"len{int(sec)}s.mp4"
        frames = np.zeros((n, size, size, 3), np.uint8)
        frames[..., 0] = (np.arange(n) % 251)[:, None, None].astype(np.uint8)
        frames[:, ::4, ::4, 1] = 200  # some texture to encode
        t0 = time.perf_counter()
        write_video(path, frames, fps=25, options={"x264-params": "mbtree=0:keyint=50"})
        t_write = time.perf_counter() - t0
        del frames
        out = {"seconds": sec, "source_frames": n, "n_frames": n_frames, "file_mb": path.stat().st_size / 2**20,
               "encode_s": t_write}
        ref = None
        for mode, seek in (("sequential", False), ("seek", None)):
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                clip = read_video(path, n_frames, seek=seek)
                ts.append(time.perf_counter() - t0)
            out[f"{mode}_s"] = sorted(ts)[len(ts) // 2]
            if ref is None:
                ref = clip
            out["same_frames"] = bool(torch.equal(ref, clip))
        out["speedup"] = out["sequential_s"] / out["seek_s"]
        rows.append(out)
        path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=None, help="existing suite (its test split); default: generate cases")
    ap.add_argument("--limit", type=int, default=0, help="max test videos per case (0: all)")
    ap.add_argument("--n-frames", type=int, default=16, help="frames sampled per video")
    ap.add_argument("--out", default="results/benchmarks/video_io.json")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300, 900],
                    help="video lengths (s) for the decode-vs-length table")
    ap.add_argument("--only-length", action="store_true", help="only the decode-vs-length table")
    a = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="video_io_"))
    rows: list[dict] = []
    length_rows: list[dict] = []
    try:
        length_rows = bench_length(a.lengths, a.n_frames, work)
        if a.only_length:
            pass
        elif a.suite:
            rows.append(bench_case("suite", Path(a.suite), a.n_frames, EncoderConfig(), a.limit, work))
        else:
            cases = [
                ("64px-32f", SuiteSpec(n_train=0, n_val=0, n_test=240), EncoderConfig()),
                ("224px-128f", SuiteSpec(n_train=0, n_val=0, n_test=24, frames_long=128, frames_dense=128,
                                         size=224), EncoderConfig(image_size=224, patch_size=28)),
            ]
            for name, spec, enc in cases:
                t0 = time.perf_counter()
                suite = work / name
                make_suite(suite, spec, progress=False)
                print(f"[{name}] generated {spec.n_test} videos in {time.perf_counter() - t0:.1f} s")
                rows.append(bench_case(name, suite, a.n_frames, enc, a.limit, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lh = (f"{'length (s)':>10s} {'src frames':>10s} {'frames':>6s} {'sequential (s)':>14s} {'seek (s)':>9s} "
          f"{'speedup':>8s} {'same':>5s}")
    print(lh)
    print("-" * len(lh))
    for r in length_rows:
        print(f"{r['seconds']:10.0f} {r['source_frames']:10d} {r['n_frames']:6d} {r['sequential_s']:14.3f} "
              f"{r['seek_s']:9.3f} {r['speedup']:7.1f}x {str(r['same_frames']):>5s}")
    hdr = (f"{'case':12s} {'videos':>6s} {'source':>16s} {'decode f/s':>11s} {'src f/s':>9s} {'encode f/s':>11s} "
           f"{'cold v/s':>9s} {'warm v/s':>9s} {'warm speedup':>13s}")
    if rows:
        print(hdr)
        print("-" * len(hdr))
    for r in rows:
        print(f"{r['case']:12s} {r['videos']:6d} {r['source']:>16s} {r['decode_sampled_fps']:11.0f} "
              f"{r['decode_source_fps']:9.0f} {r['encode_fps']:11.0f} {r['cold_videos_per_s']:9.1f} "
              f"{r['warm_videos_per_s']:9.1f} {r['warm_speedup']:12.1f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "machine": platform.machine(),
           "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": "video_io", "env": env, "rows": rows,
                               "decode_vs_length": length_rows}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
