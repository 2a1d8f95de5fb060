#!/usr/bin/env bash
# Run a command with the local Slurm cluster up, and stop the cluster afterwards whatever happens.
#
# Usage: slurm/local/ci-wrap.sh COMMAND [ARGS...]
#   e.g. slurm/local/ci-wrap.sh /work/venv/bin/pytest -q
#
# 1. installs the Debian packages if missing (slurm/local/install.sh);
# 2. if the cluster in $MAMBAMIA_SLURM_DIR already runs (a developer's), uses it and leaves it running;
#    otherwise clears stale state from an earlier run and starts a fresh one (slurm/local/start.sh);
# 3. runs COMMAND with SLURM_CONF exported (the Slurm tests and the sweep find the cluster through it);
# 4. stops the daemons it started (slurm/local/stop.sh; the state dir with its logs stays for a post-mortem),
#    also on failure, Ctrl-C or SIGTERM, and exits with COMMAND's exit code.
# If the cluster cannot be installed or started, COMMAND still runs (the other tests are worth running);
# with CI=true the Slurm tests then fail rather than skip, so the run cannot pass unnoticed.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(($# > 0)) || { sed -n '2,14p' "$0"; exit 2; }

SDIR="${MAMBAMIA_SLURM_DIR:-/tmp/mambamia-slurm}"
export SLURM_CONF="$SDIR/etc/slurm.conf"
started=0

cleanup() {
  if ((started)); then
    "$HERE/stop.sh" || echo "[ci-wrap] stop.sh failed" >&2
    started=0
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if "$HERE/status.sh" >/dev/null 2>&1; then
  echo "[ci-wrap] using the Slurm cluster already running in $SDIR (left running afterwards)" >&2
else
  t0=$SECONDS
  started=1  # from here on, whatever start.sh managed to start gets stopped
  if "$HERE/install.sh" && "$HERE/stop.sh" --purge && "$HERE/start.sh"; then
    echo "[ci-wrap] Slurm cluster installed and started in $((SECONDS - t0)) s" >&2
  else
    echo "[ci-wrap] WARNING: could not start the local Slurm cluster; running the command anyway" >&2
    for f in "$SDIR"/log/*.log; do
      [[ -f $f ]] && { echo "----- $f (tail)" >&2; tail -n 20 "$f" >&2; }
    done
  fi
fi

rc=0
"$@" || rc=$?
cleanup
exit "$rc"
