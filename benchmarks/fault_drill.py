"""Fault drill: a checkout's sweep driver under two faults of issue 20, counted from outside.

    python benchmarks/fault_drill.py                        # this checkout
    python benchmarks/fault_drill.py --code /work/main      # another checkout (e.g. before the fix), same drill

Both scenarios run the real CLI of the checkout (``PYTHONPATH=<code>``) with the local executor on a
tiny study (identity block, 2 seeds, ``--max-parallel 2``) and count what happened from the outside
(submitit's files, ``metrics.jsonl``, ``/proc``), so they mean the same for any version:

* ``two_drivers``: two drivers of one study started together (3 steps per run): job submissions
  (``*_submitted.pkl``), runs whose ``metrics.jsonl`` has a step twice, exit codes;
* ``kill_driver``: SIGKILL of the driver once a run has a checkpoint (60 steps per run): job processes
  still alive 3 s later (orphans), then the immediate rerun: the most job processes alive at once,
  its exit code and the records at the end.

Prints a table and writes results/benchmarks/fault_drill[_<name>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.data.synthetic import SuiteSpec, make_suite  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def spec_file(d: Path, suite: Path, steps: int) -> Path:
    p = d / f"drill{steps}.yaml"
    p.write_text(f"""study: drill{steps}
base:
  train: {{steps: {steps}, batch_size: 4, warmup_steps: 1, checkpoint_every: 2, log_every: 1}}
  eval: {{limit: 4}}
  data: {{suite: {suite}, cache_dir: {d / 'cache'}}}
grid:
  model.compressor.block: [identity]
seeds: [0, 1]
suites: [mia_long]
""")
    return p


def start(code: Path, spec: Path, res: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness.sweep", str(spec), "--results", str(res),
                             "--no-progress", "--no-report", "--max-parallel", "2"], cwd=code, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def job_pids(res: Path) -> list[int]:
    """Live submitit task processes of this results folder (``submitit.core._submit <logs folder>``)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "submitit.core._submit" in cmd and str(res) in cmd and state not in ("Z", "X"):
            out.append(int(d.name))
    return out


def dup_step_runs(res: Path) -> int:
    n = 0
    for m in (res / "runs").glob("*/metrics.jsonl"):
        steps = [json.loads(ln)["step"] for ln in m.read_text().splitlines() if '"step"' in ln]
        n += len(steps) != len(set(steps))
    return n


def statuses(res: Path) -> list[str]:
    return sorted(json.loads(p.read_text()).get("status") for p in (res / "store" / "runs").glob("*.json"))


def two_drivers(code: Path, work: Path, suite: Path) -> dict[str, Any]:
    res = work / "res2"
    spec = spec_file(work, suite, 3)
    procs = [start(code, spec, res, work / f"two{i}.log") for i in range(2)]
    rcs = [p.wait(timeout=600) for p in procs]
    return {"scenario": "two_drivers", "runs": 2, "submissions": len(list(res.rglob("*_submitted.pkl"))),
            "dup_step_runs": dup_step_runs(res), "exit_codes": rcs, "statuses": statuses(res)}


def kill_driver(code: Path, work: Path, suite: Path) -> dict[str, Any]:
    res = work / "resk"
    spec = spec_file(work, suite, 60)
    drv = start(code, spec, res, work / "kill.log")
    t0 = time.monotonic()
    while not list((res / "runs").glob("*/checkpoint.pt")) and time.monotonic() - t0 < 300:
        time.sleep(0.1)
    drv.send_signal(signal.SIGKILL)
    drv.wait()
    time.sleep(3)
    orphans = job_pids(res)
    rerun = start(code, spec, res, work / "rerun.log")
    peak = 0
    while rerun.poll() is None:
        peak = max(peak, len(job_pids(res)))
        time.sleep(0.2)
    finished_msg = "every run of the study is finished" in (work / "rerun.log").read_text()
    for pid in job_pids(res):  # what the drill started and is still running: stop it, by pid
        os.kill(pid, signal.SIGKILL)
    return {"scenario": "kill_driver", "runs": 2, "orphans_after_3s": len(orphans), "rerun_peak_jobs": peak,
            "rerun_exit": rerun.returncode, "rerun_says_all_finished": finished_msg,
            "dup_step_runs": dup_step_runs(res), "statuses": statuses(res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose driver is drilled (default: this one)")
    ap.add_argument("--name", default="", help="suffix of the JSON file (e.g. 'before')")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fault_drill_") as tmp:
        work = Path(tmp)
        suite = work / "mia"
        make_suite(suite, SuiteSpec(n_train=24, n_val=0, n_test=24, frames_long=16, frames_dense=16), workers=1,
                   progress=False)
        rows.append(two_drivers(a.code, work, suite))
        rows.append(kill_driver(a.code, work, suite))
    for r in rows:
        r["code"] = str(a.code)
    cols = ["scenario", "runs", "submissions", "dup_step_runs", "orphans_after_3s", "rerun_peak_jobs", "rerun_exit",
            "rerun_says_all_finished", "exit_codes", "statuses"]
    print_table([{c: r.get(c, "") for c in cols} for r in rows], cols)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=a.code, capture_output=True, text=True).stdout
    write_json("fault_drill" + (f"_{a.name}" if a.name else ""),
               {"machine": machine(), "code": str(a.code), "commit": git.strip(), "rows": rows})


if __name__ == "__main__":
    main()
