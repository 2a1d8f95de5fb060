"""``python -m harness.data``: make the synthetic suite, inspect it, probe videos, fill the feature cache;
write a LLaVA-Video-178K-schema sample and show a conversation dataset's manifest.

Examples::

    python -m harness.data make-synthetic --out results/data/mia_synthetic          # default suite
    python -m harness.data make-synthetic --out /tmp/long --frames-long 256 --event-len 2 \\
        --clutter 4 --size 96 --families needle_what needle_when count --n-train 600
    python -m harness.data info results/data/mia_synthetic
    python -m harness.data probe some_video.mp4 --n-frames 16 --size 64
    python -m harness.data features --suite results/data/mia_synthetic --n-frames 16 --encoder tiny
    python -m harness.data make-llava-sample --out results/data/llava_sample
    python -m harness.data manifest --mixture configs/paper_llava_video_178k.yaml   # identity, counts
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from harness.config import DataConfig, EncoderConfig
from harness.data.synthetic import FAMILIES, SuiteSpec, load_items, load_meta, make_suite


def _add_make(sub: argparse._SubParsersAction) -> None:
    d = SuiteSpec()
    p = sub.add_parser(
        "make-synthetic",
        help="generate the procedural multiple-choice video suite (deterministic from --seed)",
        description="Generate the MambaMia synthetic suite: real encoded videos + JSONL annotations with "
                    "train/val/test splits from disjoint seeds. Families (group): "
                    + ", ".join(f"{f} ({g})" for f, g in FAMILIES.items())
                    + ". Sizes are totals over the selected families (rounded up to a multiple of 4 per "
                    "family so answer letters are balanced).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="suite directory to create (e.g. results/data/mia_synthetic)")
    p.add_argument("--seed", type=int, default=d.seed, help="root seed; same seed + knobs = same files")
    p.add_argument("--n-train", type=int, default=d.n_train, help="train items (all families)")
    p.add_argument("--n-val", type=int, default=d.n_val, help="validation items (all families)")
    p.add_argument("--n-test", type=int, default=d.n_test, help="test items (all families)")
    p.add_argument("--families", nargs="+", default=d.families, choices=list(FAMILIES), metavar="FAMILY",
                   help=f"families to generate: {' '.join(FAMILIES)}")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per video for every family (sets --frames-long and --frames-dense)")
    p.add_argument("--frames-long", type=int, default=d.frames_long, help="frames per long-family video (16..1024)")
    p.add_argument("--frames-dense", type=int, default=d.frames_dense,
                   help="frames per dense-family video (16..1024)")
    p.add_argument("--event-len", type=int, default=d.event_len, help="frames a brief event lasts")
    p.add_argument("--clutter", type=int, default=d.clutter,
                   help="grey moving blobs per video; long families also get this many persistent objects")
    p.add_argument("--noise", type=int, default=d.noise, help="background texture amplitude (0..60)")
    p.add_argument("--size", type=int, default=d.size, help="frame height = width in pixels (even)")
    p.add_argument("--fps", type=float, default=d.fps, help="frame rate written into the files")
    p.add_argument("--format", choices=("mp4", "webm"), default=d.format, help="mp4 (H.264) or webm (VP8)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(cores, 8))")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_make(a: argparse.Namespace) -> int:
    spec = SuiteSpec(seed=a.seed, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, families=list(a.families),
                     frames_long=a.frames if a.frames else a.frames_long,
                     frames_dense=a.frames if a.frames else a.frames_dense,
                     event_len=a.event_len, clutter=a.clutter, noise=a.noise, size=a.size, fps=a.fps,
                     format=a.format)
    try:
        meta = make_suite(a.out, spec, workers=a.workers, overwrite=a.overwrite, progress=not a.quiet)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(sum(c.values()) for c in meta["counts"].values())
    print(f"wrote {n} items to {a.out} in {meta['seconds']:.1f} s ({meta['workers']} workers)")
    for split, c in meta["counts"].items():
        print(f"  {split:5s} {sum(c.values()):5d} items  answers {meta['answers'][split]}")
    return 0


def _cmd_info(a: argparse.Namespace) -> int:
    meta = load_meta(a.suite)
    print(json.dumps({k: meta[k] for k in ("format_version", "spec", "seconds")}, indent=1))
    for split in ("train", "val", "test"):
        items = load_items(a.suite, split)
        fam = Counter(it["family"] for it in items)
        ans = Counter((it["family"], it["answer"]) for it in items)
        print(f"{split}: {len(items)} items")
        for f, n in sorted(fam.items()):
            dist = " ".join(f"{L}={ans[(f, L)]}" for L in "ABCD")
            print(f"  {f:12s} {n:5d}  {dist}")
    if a.show:
        for it in load_items(a.suite, "test")[: a.show]:
            print(f"[{it['id']}] {it['question']} {it['options']} -> {it['answer']}")
    return 0


def _cmd_probe(a: argparse.Namespace) -> int:
    from harness.data.video import VideoDecodeError, probe_video, read_video  # lazy: heavy (torch)

    rc = 0
    for path in a.videos:
        try:
            info = probe_video(path)
            t0 = time.perf_counter()
            frames = read_video(path, a.n_frames, sampling=a.sampling, fps=a.fps, size=a.size)
            dt = time.perf_counter() - t0
            print(f"{path}: {info.codec} {info.width}x{info.height} {info.n_frames} frames @ {info.fps:.2f} fps "
                  f"-> {tuple(frames.shape)} in {dt * 1000:.1f} ms")
        except VideoDecodeError as e:
            print(f"FAILED {e}", file=sys.stderr)
            rc = 1
    return rc


def _cmd_features(a: argparse.Namespace) -> int:
    from harness.data.features import ensure_features  # lazy: heavy (torch, transformers)

    data = DataConfig(suite=a.suite, families=a.families or [], n_frames=a.n_frames, sampling=a.sampling,
                      fps=a.fps, cache_dir=a.cache_dir)
    enc = EncoderConfig(name=a.encoder, name_or_path=a.name_or_path)
    fs = ensure_features(data, enc, splits=a.splits, progress=not a.quiet)
    print(json.dumps({"encoder_id": fs.encoder_id, "weights_hash": fs.weights_hash, **fs.stats}, indent=1))
    for item_id, reason in list(fs.failed.items())[:20]:
        print(f"FAILED {item_id}: {reason}", file=sys.stderr)
    return 0


def _cmd_make_llava(a: argparse.Namespace) -> int:
    from harness.data.llava_sample import make_llava_sample  # lazy: heavy (torch)

    info = make_llava_sample(a.out, n_videos=a.n_videos, long_frames=a.long_frames, seed=a.seed)
    print(json.dumps(info, indent=1))
    print(f"train on it: python -m harness.train tiny data.dataset=llava_video "
          f"data.args.mixture={info['mixture']}", file=sys.stderr)
    return 0


def _cmd_manifest(a: argparse.Namespace) -> int:
    from harness.data.datasets import build_manifest  # lazy: heavy (torch, transformers)

    args = {"mixture": a.mixture} if a.mixture else {"path": a.path, "video_root": a.video_root}
    m = build_manifest(DataConfig(dataset="llava_video", args=args, manifest_dir=a.manifest_dir))
    st = m.stats
    print(json.dumps({"identity": f"{m.name}:{m.identity}", "n_items": len(m), "groups": m.groups,
                      **{k: st[k] for k in ("n_records", "n_malformed", "entries") if k in st}}, indent=1))
    for loc, why in list(st.get("malformed", {}).items())[:20]:
        print(f"MALFORMED {loc}: {why}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_make(sub)
    p = sub.add_parser("info", help="summarise a suite: counts and answer balance per split and family")
    p.add_argument("suite", help="suite directory")
    p.add_argument("--show", type=int, default=0, help="also print N test questions")
    p = sub.add_parser("probe", help="read videos like the pipeline does and report metadata / errors",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("videos", nargs="+")
    p.add_argument("--n-frames", type=int, default=16)
    p.add_argument("--sampling", choices=("uniform", "fps"), default="uniform")
    p.add_argument("--fps", type=float, default=None, help="for --sampling fps")
    p.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE")
    p = sub.add_parser("features", help="fill the feature cache for a suite (what a sweep does once)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", default="results/data/mia_synthetic")
    p.add_argument("--families", nargs="*", default=None, help="families or groups (long, dense); default all")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--n-frames", type=int, default=16)
    p.add_argument("--sampling", choices=("uniform", "fps"), default="uniform")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--cache-dir", default="results/cache/features")
    p.add_argument("--encoder", choices=("tiny", "siglip", "clip"), default="tiny")
    p.add_argument("--name-or-path", default="", help="HF model for siglip / clip (must be available locally)")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("make-llava-sample", help="write a small LLaVA-Video-178K-schema dataset (real H.264 "
                       "files, a long one, damaged ones, malformed records) and its mixture YAML",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n-videos", type=int, default=24)
    p.add_argument("--long-frames", type=int, default=2400, help="frames of the one long video (8 fps)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("manifest", help="build / show the manifest of a llava_video mixture: identity, counts, "
                       "malformed records", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mixture", default="", help="LLaVA-NeXT-style data YAML ({datasets: [...]})")
    p.add_argument("--path", default="", help="one JSON / JSONL file (instead of --mixture)")
    p.add_argument("--video-root", default="")
    p.add_argument("--manifest-dir", default="results/cache/manifests")
    a = ap.parse_args(argv)
    return {"make-synthetic": _cmd_make, "info": _cmd_info, "probe": _cmd_probe,
            "features": _cmd_features, "make-llava-sample": _cmd_make_llava,
            "manifest": _cmd_manifest}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
