"""``python -m harness.probe CONFIG [key=value ...]``: fit and score one probe run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from harness import trackers
from harness.config import ConfigError, config_hash, to_dict
from harness.evaluate import format_metrics
from harness.probe.run import train_and_evaluate
from harness.train import load_run_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.probe", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the probe protocol (compressor + fixed read-out, cross-entropy over the 4 fixed "
                    "options) on cached features, then score eval.split.",
        epilog="example:\n  python -m harness.probe tiny data.suite=results/data/mia_compress "
               "'data.synthetic={families: [pair_order, mark_place, flash_when]}' 'eval.tasks=[mia_compress]'")
    ap.add_argument("config", help="YAML file of RunConfig overrides, or a preset name (tiny)")
    ap.add_argument("overrides", nargs="*", help="key.path=value overrides (YAML values)")
    ap.add_argument("--run-dir", default=None, help="output directory (default results/runs/<config hash>)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_run_config(args.config, [*args.overrides, "protocol=probe"])
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else Path("results/runs") / config_hash(cfg)
    session = trackers.standalone_session(to_dict(cfg), run_dir, "harness.probe")  # train.report_to
    final: dict[str, object] = {"status": "failed"}
    try:
        with trackers.activated(session):
            res = train_and_evaluate(cfg, run_dir)
        final = {"status": "done", **res}
    finally:
        trackers.close_session(session, final)
    print(format_metrics(res))
    print(f"train {res['extra'].get('train_train_time_s', 0):.1f} s, run dir {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
