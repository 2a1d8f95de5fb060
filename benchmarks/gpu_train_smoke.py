"""GPU smoke run of the tiny preset: a few hundred optimizer steps with bf16 autocast, and its throughput
against the CPU of the same machine, in one run.

It generates the synthetic suite (``python -m harness.data make-synthetic``) unless ``--suite`` holds one,
then runs ``python -m harness.train tiny`` twice with the same config: on ``cuda`` for ``--steps`` steps
and on ``cpu`` for ``--cpu-steps`` steps (all cores). Throughput is the median ``items_per_s`` of the
logged windows after the first (steady state: the first window holds the warm-up), read from each run's
metrics.jsonl; the summary also keeps the first and last logged loss.

    python benchmarks/gpu_train_smoke.py                     # 300 GPU steps, up to 40 CPU steps (240 s)
    python benchmarks/gpu_train_smoke.py --steps 100 --cpu-steps 20 --work /tmp/smoke

Writes results/benchmarks/gpu_train_smoke.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


def run(cmd: list[str], log: Path, timeout: float | None = None) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; returns wall seconds; raises on failure
    (``subprocess.TimeoutExpired`` after ``timeout`` seconds, the child killed)."""
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                              timeout=timeout)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); end of {log}:\n{tail}")
    return time.perf_counter() - t


def train(device: str, steps: int, suite: Path, work: Path, threads: int, timeout: float | None = None,
          log_every: int = 10) -> dict[str, Any]:
    """One tiny-preset run; with ``timeout`` a run still going is stopped and measured from the windows it
    logged (``stopped_early`` says so)."""
    run_dir = work / f"run_{device}"
    if run_dir.exists():  # never resume: each smoke run starts from step 0
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "harness.train", "tiny",
           f"data.suite={suite}", f"data.cache_dir={work / 'cache'}",
           f"train.steps={steps}", f"train.log_every={log_every}", f"train.checkpoint_every={steps}",
           "--device", device,
           "--run-dir", str(run_dir), "--no-progress"]
    if threads:
        cmd += ["--threads", str(threads)]
    stopped = False
    try:
        wall = run(cmd, work / f"train_{device}.log", timeout)
    except subprocess.TimeoutExpired:
        wall, stopped = float(timeout or 0), True
    mpath = run_dir / "metrics.jsonl"
    recs = [json.loads(x) for x in mpath.read_text().splitlines() if x.strip()] if mpath.is_file() else []
    if not recs:
        raise RuntimeError(f"{device} run logged no step within {wall:.0f} s; see {work / f'train_{device}.log'}")
    summary = {} if stopped else json.loads((run_dir / "train_summary.json").read_text())
    steady = [r["items_per_s"] for r in recs[1:]] or [r["items_per_s"] for r in recs]
    return {"device": device, "steps": recs[-1]["step"] if stopped else steps, "stopped_early": stopped,
            "wall_s": wall, "train_time_s": summary.get("train_time_s"),
            "items_per_s_steady": statistics.median(steady), "items_per_s_overall": summary.get("items_per_s"),
            "first_loss": recs[0].get("loss"), "final_loss": summary.get("final_loss", recs[-1].get("loss")),
            "visual_tokens_per_item": summary.get("visual_tokens_per_item"), "params": summary.get("params"),
            "metrics": recs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="GPU optimizer steps")
    ap.add_argument("--cpu-steps", type=int, default=40, help="CPU optimizer steps (0: skip the CPU run)")
    ap.add_argument("--suite", default="", help="an existing synthetic suite (default: generate one in --work)")
    ap.add_argument("--work", default="/tmp/gpu_train_smoke", help="scratch folder (suite, cache, runs, logs)")
    ap.add_argument("--cpu-timeout", type=float, default=240.0,
                    help="stop the CPU run after this many seconds and measure the windows it logged")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for the CPU run (default: all cores)")
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_train_smoke.py: no CUDA device")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    suite = Path(args.suite) if args.suite else work / "suite"
    gen_s = None
    if not (suite / "meta.json").exists() and not args.suite:
        gen_s = run([sys.executable, "-m", "harness.data", "make-synthetic", "--out", str(suite)], work / "make.log")
        print(f"suite generated in {gen_s:.0f} s", flush=True)
    rows = [train("cuda", args.steps, suite, work, 0)]
    print(f"  cuda: {rows[-1]['items_per_s_steady']:.1f} items/s", flush=True)
    if args.cpu_steps:
        rows.append(train("cpu", args.cpu_steps, suite, work, args.threads or (os.cpu_count() or 1),
                          timeout=args.cpu_timeout, log_every=5))
        print(f"  cpu: {rows[-1]['items_per_s_steady']:.1f} items/s", flush=True)
    speedup = rows[0]["items_per_s_steady"] / rows[1]["items_per_s_steady"] if len(rows) > 1 else None
    print("\n## Tiny preset training: GPU (bf16 autocast) vs CPU")
    print_table(rows, ["device", "steps", "items_per_s_steady", "train_time_s", "first_loss", "final_loss"])
    print(f"GPU / CPU throughput: {speedup}")
    from harness.model.ssm import have_cuda_kernels

    write_json("gpu_train_smoke", {"machine": machine(), "mamba_ssm_cuda_kernels": have_cuda_kernels(),
                                   "bf16_autocast_on_gpu": True, "suite_generation_s": gen_s, "runs": rows,
                                   "gpu_over_cpu_items_per_s": speedup}, Path(args.out))


if __name__ == "__main__":
    main()
