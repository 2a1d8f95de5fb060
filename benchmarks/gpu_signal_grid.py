"""Which tiny-preset settings learn the mixed synthetic suite? A grid of training runs on one GPU.

Each grid point is ``python -m harness.train tiny <overrides> --eval`` (native scorer, test split) on
the same suite and feature cache; several run at once on the GPU (tiny models are launch-bound, so
they share it well). For each point the table gives per-family test accuracy (n items each), mia_all,
the loss curve's first / last logged values and the step at which the smoothed loss first fell 10%
below chance level (``-1``: never), i.e. when the answer started to depend on the video.

    python benchmarks/gpu_signal_grid.py                          # the default grid, 2000 steps of 16
    python benchmarks/gpu_signal_grid.py --steps 600 --only base,lr3e-3
    python benchmarks/gpu_signal_grid.py --point "wide:model.llm.hidden_size=128 model.llm.n_layers=4"
    bash benchmarks/gpu_signal_grid.sh r3                         # the rounds reported in docs/lmm.md

Writes results/benchmarks/gpu_signal_grid.json (and keeps runs and logs under --work).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: name -> overrides on top of the tiny preset (and of --common)
DEFAULT_GRID: dict[str, str] = {
    "base": "",
    "lr3e-3": "train.lr=3e-3",
    "llm128x4": "model.llm.hidden_size=128 model.llm.n_layers=4 model.llm.intermediate_size=256",
    "transformer": "model.compressor.block=transformer",
    "mamba2": "model.compressor.ssm.version=2",
    "q_last": "model.video_position=before_last_line",
    "no_compress": "model.compressor.enabled=false",
    "init02": "model.llm.init_std=0.02",
    # curriculum: the colour family alone for the first 100 steps, then the whole suite
    "cur100": "'train.stages=[{start_step: 0, families: [colour], train_modules: [compressor, projector, llm]}, "
              "{start_step: 100, train_modules: [compressor, projector, llm]}]'",
}


def sh(cmd: list[str], log: Path, timeout: float | None = None) -> tuple[int, float]:
    t = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - t


def chance_step(recs: list[dict[str, Any]], chance: float, window: int = 3) -> int:
    """First logged step whose running-mean loss is 10% below ``chance`` (-1: never)."""
    losses = [r["loss"] for r in recs]
    for i in range(len(losses)):
        lo = max(0, i - window + 1)
        if sum(losses[lo:i + 1]) / (i + 1 - lo) < 0.9 * chance:
            return int(recs[i]["step"])
    return -1


def run_point(name: str, overrides: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_dir = work / "runs" / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "harness.train", "tiny", f"data.suite={args.suite}",
           f"data.cache_dir={work / 'cache'}", f"train.steps={args.steps}",
           f"train.batch_size={args.batch_size}", f"train.log_every={args.log_every}",
           f"train.checkpoint_every={args.steps}", *shlex.split(args.common), *shlex.split(overrides),
           "--device", "cuda", "--run-dir", str(run_dir), "--no-progress", "--eval"]
    rc, wall = sh(cmd, work / f"{name}.log", args.timeout)
    row: dict[str, Any] = {"point": name, "overrides": overrides, "rc": rc, "wall_s": round(wall, 1)}
    mpath = run_dir / "metrics.jsonl"
    recs = [json.loads(x) for x in mpath.read_text().splitlines() if x.strip()] if mpath.is_file() else []
    # chance level of the logged loss: the mean over the letter token (ln 4) and EOS (~0)
    row.update(first_loss=recs[0]["loss"] if recs else None, final_loss=recs[-1]["loss"] if recs else None,
               learn_step=chance_step(recs, math.log(4) / 2) if recs else None,
               curve=[(r["step"], round(r["loss"], 4)) for r in recs])
    evs = sorted((run_dir / "eval" / "native").glob("test_loglik*/result.json"))  # harness.evaluate.eval_dir
    ev = evs[0] if evs else run_dir / "eval" / "native_loglik.json"  # runs evaluated before per-suite outputs
    if ev.is_file():
        for m in json.loads(ev.read_text())["metrics"]:
            row[m["task"].removeprefix("mia_")] = round(m["value"], 3)
            row[f"n_{m['task'].removeprefix('mia_')}"] = m["n"]
    elif rc == 0:
        row["rc"] = "no eval"
    print(f"  {name}: rc={rc} {wall:.0f}s all={row.get('all')} learn_step={row['learn_step']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=4, help="runs at once on the GPU")
    ap.add_argument("--only", default="", help="comma-separated grid point names (default: all)")
    ap.add_argument("--point", action="append", default=[],
                    help="extra point 'name:k=v k=v' (repeatable); with --only-extra the default grid is skipped")
    ap.add_argument("--only-extra", action="store_true")
    ap.add_argument("--common", default="", help="overrides applied to every point")
    ap.add_argument("--suite", default="", help="an existing suite (default: generate the default one in --work)")
    ap.add_argument("--suite-args", default="", help="extra make-synthetic arguments when generating")
    ap.add_argument("--work", default="/tmp/gpu_signal_grid")
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds per run")
    ap.add_argument("--tag", default="", help="suffix of the JSON name")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.suite:
        args.suite = str(work / "suite")
        if not (Path(args.suite) / "meta.json").exists():
            rc, s = sh([sys.executable, "-m", "harness.data", "make-synthetic", "--out", args.suite,
                        *shlex.split(args.suite_args)], work / "make.log")
            print(f"suite generated in {s:.0f} s (rc {rc})", flush=True)
            if rc:
                sys.exit((work / "make.log").read_text()[-3000:])
    grid = {} if args.only_extra else dict(DEFAULT_GRID)
    if args.only:
        keep = set(args.only.split(","))
        grid = {k: v for k, v in grid.items() if k in keep}
    for p in args.point:
        name, _, ov = p.partition(":")
        grid[name] = ov
    # fill the feature cache once (train + test) so parallel runs do not all extract the same features
    rc, s = sh([sys.executable, "-m", "harness.train", "tiny", f"data.suite={args.suite}",
                f"data.cache_dir={work / 'cache'}", "train.steps=1",
                *[t for t in shlex.split(args.common) if t.startswith("data.")], "--device", "cuda",
                "--run-dir", str(work / "runs" / "_warm"), "--no-progress", "--eval"], work / "warm.log")
    print(f"feature cache filled in {s:.0f} s (rc {rc})", flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda kv: run_point(kv[0], kv[1], args, work), grid.items()))
    fams = [c for c in ("colour", "needle_what", "needle_when", "count", "order", "direction", "location")
            if any(c in r for r in rows)]
    print(f"\n## Tiny preset on the mixed suite, {args.steps} steps of {args.batch_size} on a GPU "
          f"(common: {args.common or '-'})")
    print_table(rows, ["point", "rc", "wall_s", "learn_step", "final_loss", *fams, "all"])
    n = {f: next((r.get(f"n_{f}") for r in rows if r.get(f"n_{f}")), None) for f in [*fams, "all"]}
    print(f"test items per family: {n}")
    write_json(f"gpu_signal_grid{args.tag}", {
        "machine": machine(), "steps": args.steps, "batch_size": args.batch_size, "common": args.common,
        "suite": args.suite, "suite_args": args.suite_args, "grid_wall_s": time.perf_counter() - t0,
        "n_test": n, "rows": rows}, Path(args.out))


if __name__ == "__main__":
    main()
