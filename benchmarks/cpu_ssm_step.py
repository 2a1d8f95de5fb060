"""One bi-SSM compressor training step on a CPU, per scan backend in the same run, with its profile.

The step of issue 23: the tiny preset's compressor (d_model 64, 2 bidirectional Mamba-1 layers, period 16),
batch 16, 16 frames x 64 patches, forward + backward of a squared-token loss; one torch thread unless
``--threads``. Each backend (``cpu``: the compiled scan, ``torch``: the pure-PyTorch chunked scan) is timed
over ``--repeat`` steps after a warm-up, then one more step runs under torch.profiler and its top self-CPU
ops are listed (the compiled scan shows as the autograd Function ``SelectiveScanNumba``).

    python benchmarks/cpu_ssm_step.py                 # ~1 minute on one core
    python benchmarks/cpu_ssm_step.py --threads 2 --block uni_ssm

Prints a table and writes results/benchmarks/cpu_ssm_step.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, timeit, write_json  # noqa: E402

from harness.model.registry import build_compressor  # noqa: E402


def step_fn(comp: torch.nn.Module, x: torch.Tensor):
    def fb() -> None:
        comp.zero_grad(set_to_none=True)
        comp(x).tokens.square().mean().backward()
    return fb


def top_ops(fb, k: int) -> list[dict]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fb()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:k]
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch (and numba) threads")
    ap.add_argument("--block", default="bi_ssm", choices=["bi_ssm", "uni_ssm"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--top", type=int, default=6, help="profiled ops listed per backend")
    ap.add_argument("--out", default="results/benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.frames, 64, 64, generator=torch.Generator().manual_seed(0))
    rows, profiles = [], {}
    for backend in ("cpu", "torch"):
        torch.manual_seed(0)
        comp = build_compressor({"block": args.block, "d_in": 64, "d_model": 64, "d_out": 64,
                                 "spatial": {"period": 16, "n_layers": args.layers}, "ssm": {"backend": backend}})
        fb = step_fn(comp, x)
        t = timeit(fb, repeat=args.repeat, warmup=1)
        profiles[backend] = top_ops(fb, args.top)
        rows.append({"backend": backend, "step_s": t,
                     "top_ops": ", ".join(f"{o['op']} {o['self_cpu_ms'] / 1e3:.2f} s" for o in profiles[backend][:4])})
        print(f"  {backend}: {t:.3f} s/step", flush=True)
    rows[0]["speedup"] = rows[1]["step_s"] / rows[0]["step_s"]
    print(f"\n## {args.block} compressor step, batch {args.batch}, {args.frames} frames x 64 patches, "
          f"{args.layers} layers, {args.threads} thread(s)")
    print_table(rows, ["backend", "step_s", "speedup", "top_ops"])
    write_json("cpu_ssm_step", {"machine": machine(), "config": vars(args), "rows": rows, "profiles": profiles},
               Path(args.out))


if __name__ == "__main__":
    main()
