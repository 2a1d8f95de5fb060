"""CLI: ``python -m harness.sweep ablations/<study>.yaml`` -- train and evaluate every variant of a study."""

from __future__ import annotations

import argparse
import sys

from harness.config import ConfigError
from harness.doctor import EnvironmentProblem
from harness.sweep import run_sweep
from harness.sweep.attempts import DEFAULT_MAX_ATTEMPTS
from harness.sweep.job import describe_io_failure
from harness.sweep.spec import SpecError

EPILOG = """\
examples:
  python -m harness.sweep ablations/block_type.yaml                 # everything, on this machine
  python -m harness.sweep ablations/block_type.yaml --dry-run       # the plan: runs, done, to submit, cost
  python -m harness.sweep ablations/pooling.yaml --set train.steps=50 --set seeds=[0]
  python -m harness.sweep ablations/block_type.yaml --executor slurm --profile localcluster
  python -m harness.sweep ablations/gating.yaml --executor debug --pdb   # in process, debugger on error
  python -m harness.sweep ablations/block_type.yaml                 # again: finishes what was killed
  python -m harness.sweep ablations/block_type.yaml --retry-failed  # also rerun runs that failed by their own error
  python -m harness.sweep ablations/block_type.yaml --set train.report_to=[tensorboard]  # live curves
  python -m harness.sweep ablations/block_type.yaml --rerun-stale   # rerun results of older code/data

--set KEY=VALUE (repeatable; VALUE is YAML):
  train.steps=200                 a RunConfig path: goes into the study's base for every run; if it is
                                  a grid axis, pins the axis to that value (zip: keeps matching rows)
  seeds=[0,1]  suites=[mia_long]  profile=debug     top-level spec keys
  grid.model.compressor.block=[bi_ssm,conv]        replace an axis (also zip.<path>=[...])

what it does:
  1. validates the study (unknown keys with "did you mean", types, empty axes, values the model rejects)
     and lists every problem at once in file order, each with the file, key, line and suggestion; a
     problem that follows from an earlier one says so; nothing runs if anything is wrong (exit 2)
  2. plans: one run per (variant, seed), id = hash of the resolved config + the code's behaviour and
     config-schema versions + the encoder's identity + the dataset's content hash; duplicates collapse;
     more than --max-runs runs (default 10,000) need --yes, checked before the grid is expanded
  3. decides per run: skips finished ones; runs the unfinished ones again (see "the plain rerun" below);
     leaves alone the runs that failed by their own error (--retry-failed reruns them) and the stale
     ones (a result of older code, schema or data for the same variant and seed: shown as `stale` here
     and in the report; --rerun-stale reruns them)
  4. generates the synthetic suite if missing and fills the feature cache once
  5. runs the jobs (local processes | Slurm job array | in process) with a live progress view
  6. writes the report: results/reports/<study>/ (table: mean ± 95% CI over seeds, figures)

the plain rerun (the same command again) finishes what was interrupted or killed:
  a run whose job died from outside -- SIGKILL, the OOM killer, a node failure, a Slurm cancel,
  preemption or time limit -- or whose driver was killed or stopped (Ctrl-C) is run again: from its
  checkpoint (DIR/runs/<id>/checkpoint.pt) when it has one, from the start when it has none. Every job
  death the driver records is counted in the run's attempts.jsonl; a run killed --max-attempts times
  (default 3) is left failed, its reason saying so ("killed 3 times in 3 attempt(s) ..."), and
  --retry-failed runs it again. Stopping or killing the driver itself is not counted. (On Slurm,
  preemption and time limits first requeue the job, which resumes from its checkpoint by itself.)
  A run that failed by its own error (an exception, a diverged loss, bad data) is rerun only with
  --retry-failed.

trackers (train.report_to: [wandb, tensorboard, mlflow], e.g. --set train.report_to=[tensorboard]):
  each run also reports its loss, lr, throughput and tokens every train.log_every steps, and its final
  metrics from the store, offline under DIR/trackers/ (docs/trackers.md); a resumed run continues its
  tracker run; a missing or failing tracker is a warning in the run's log, never a failed run.

results (--results DIR, default results/):
  DIR/store/runs/<run_id>.json     one record per run: config, metrics, tokens, git commit, versions,
                                   wall time; failed runs with reason and log path
  DIR/store/studies/<study>.json   the study index (variants, seeds, axes) read by harness.report
  DIR/runs/<run_id>/               checkpoint, exported model, metrics.jsonl, error.txt, attempts.jsonl
  DIR/trackers/                    offline W&B runs, TensorBoard event files, the MLflow file store
  DIR/logs/<study>/<job id>/       submitit job logs (--log-dir)
one owner per run (DIR/locks/, NFS-safe lock files with host, pid and heartbeat):
  a second driver of the same study on the same DIR waits for the first, then finds the study done;
  a run another study's driver owns is waited for; a job of a dead driver that still runs (a Slurm
  job, a local worker) is waited for, or stopped and resumed with --stop-previous. Local jobs die
  with the driver. A full disk is a failed run "disk full: no space left on ..." (never a traceback).
exit status: 0 all runs done and reported, 1 some runs failed/unfinished/stale or the report
failed, 2 bad spec/profile or environment (the failed
checks of `python -m harness doctor`, run before anything is written), 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m harness.sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run an ablation study: train and evaluate every variant x seed of a study YAML "
                    "(ablations/*.yaml, format in docs/study-spec.md) locally, on Slurm or in process; "
                    "survives interruptions; ends with tables and plots.", epilog=EPILOG)
    ap.add_argument("spec", metavar="STUDY.yaml", help="the study spec, e.g. ablations/block_type.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override the spec or every run's config (repeatable; see below)")
    ap.add_argument("--executor", choices=("local", "slurm", "debug"), default=None,
                    help="where jobs run (default: the profile's executor, `local` for the default profile)")
    ap.add_argument("--profile", default=None, metavar="NAME",
                    help="compute profile slurm/NAME.yaml (default: the spec's `profile:`, else local)")
    ap.add_argument("--results", default="results", metavar="DIR",
                    help="results root: DIR/store, DIR/runs, DIR/logs, DIR/reports (default: %(default)s)")
    ap.add_argument("--log-dir", default=None, metavar="DIR", help="submitit logs (default: DIR/logs/<study>)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the estimated cost; run nothing")
    ap.add_argument("--retry-failed", action="store_true",
                    help="also rerun the runs that failed by their own error, and those killed --max-attempts times")
    ap.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
                    help="the plain rerun runs a run killed from outside (SIGKILL, OOM, node failure, scheduler "
                         "cancel or time limit) again until it has been killed N times (default: %(default)s; "
                         "0: no limit)")
    ap.add_argument("--stop-previous", action="store_true",
                    help="stop the still-running jobs of a previous, dead driver of these runs (local worker: "
                         "SIGTERM then SIGKILL; Slurm: scancel) and resume them; default: wait for them")
    ap.add_argument("--rerun-stale", action="store_true",
                    help="rerun stale runs (results recorded by older code, config schema or data)")
    ap.add_argument("--max-runs", type=int, default=None, metavar="N",
                    help="refuse a study of more than N runs unless --yes (default 10,000; 0: no limit)")
    ap.add_argument("--yes", action="store_true", help="plan and run a study above --max-runs")
    ap.add_argument("--max-parallel", type=int, default=None, metavar="N",
                    help="local executor: runs at once (default: profile max_parallel_local, else "
                         "cores // cpus_per_task)")
    ap.add_argument("--show", type=int, default=60, metavar="N", help="plan lines to print (default: %(default)s)")
    ap.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay readable)")
    ap.add_argument("--pdb", action="store_true", help="debug executor: post-mortem debugger on a failing run")
    ap.add_argument("--poll", type=float, default=None, metavar="S",
                    help="seconds between status checks (default 1 local, 10 slurm)")
    ap.add_argument("--job", default=None, metavar="MODULE:FUNCTION",
                    help="advanced: replace the job body (default harness.sweep.job:train_and_evaluate); "
                         "called as FUNCTION(cfg: RunConfig, run_dir: Path) -> {metrics, tokens, extra}")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        res = run_sweep(a.spec, a.overrides, executor=a.executor, profile=a.profile, results=a.results,
                        log_dir=a.log_dir, dry_run=a.dry_run, retry_failed=a.retry_failed,
                        max_parallel=a.max_parallel, report=not a.no_report, progress=not a.no_progress,
                        pdb=a.pdb, body=a.job, show=a.show, poll_s=a.poll, stop_previous=a.stop_previous,
                        rerun_stale=a.rerun_stale, max_runs=a.max_runs, yes=a.yes, max_attempts=a.max_attempts)
    except (SpecError, ConfigError, ValueError, EnvironmentProblem) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or unwritable results disk: one line, not a traceback
        print(f"error: {describe_io_failure(e, a.results)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
