"""Planning speed: resolve, validate and hash a 10,000-run grid (target: under 2 s).

    python benchmarks/plan_speed.py

Prints a table and writes results/benchmarks/plan_speed.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.store import ResultsStore  # noqa: E402
from harness.sweep.plan import plan_study  # noqa: E402
from harness.sweep.spec import load_spec  # noqa: E402

GRIDS = {
    "2000 variants x 5 seeds": ("seeds: [0, 1, 2, 3, 4]", "  train.lr: [0.001, 0.002, 0.003, 0.004, 0.005]\n"),
    "10000 variants x 1 seed": ("seeds: [0]", "  train.lr: [0.001, 0.002, 0.003, 0.004, 0.005]\n"
                                "  train.steps: [10, 20, 30, 40, 50]\n"),
}
BASE = """study: big
grid:
  model.compressor.block: [bi_ssm, uni_ssm, transformer, conv, identity]
  model.compressor.pooling: [weighted, mean, max, query, attention]
  model.compressor.spatial.period: [2, 4, 8, 16]
  model.compressor.budget: [0, 16, 32, 64]
"""


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (seeds, extra) in GRIDS.items():
            spec = Path(tmp) / "big.yaml"
            spec.write_text(BASE + extra + seeds + "\n")
            t0 = time.perf_counter()
            plan = plan_study(load_spec(spec), ResultsStore(Path(tmp) / "store"))
            dt = time.perf_counter() - t0
            rows.append({"grid": name, "runs": len(plan.runs), "seconds": dt, "target_s": 2.0})
    print_table(rows, ["grid", "runs", "seconds", "target_s"])
    write_json("plan_speed", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
