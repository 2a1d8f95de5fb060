# shellcheck shell=bash disable=SC2034  # (variables here are used by the scripts that source it)
# Shared settings and helpers for slurm/local/*.sh (sourced, not run).
#
# Every knob is an environment variable with a default, so a developer VM and CI use the same scripts:
#   MAMBAMIA_SLURM_DIR         state dir: configs, pid files, logs, spool, database  [/tmp/mambamia-slurm]
#   MAMBAMIA_SLURM_ACCOUNTING  dbd (slurmdbd + MariaDB: real job states in sacct) | none     [dbd]
#   MAMBAMIA_SLURM_PORT        slurmctld port; slurmd, slurmdbd, MariaDB use the next three [6817]
#   MAMBAMIA_SLURM_PARTITION   the one partition's name                                  [debug]
#   MAMBAMIA_SLURM_CPUS        CPUs of the node                                          [nproc]
#   MAMBAMIA_SLURM_MEM_MB      RealMemory of the node in MiB                  [80% of MemTotal]
#   MAMBAMIA_SLURM_TIMEOUT     seconds to wait for a daemon or for the node to be idle     [90]
# Daemons are found and stopped through their pid files only, never by process name.

set -euo pipefail

SLURM_LOCAL_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SDIR="${MAMBAMIA_SLURM_DIR:-/tmp/mambamia-slurm}"
ACCOUNTING="${MAMBAMIA_SLURM_ACCOUNTING:-dbd}"
PORT="${MAMBAMIA_SLURM_PORT:-6817}"
PARTITION="${MAMBAMIA_SLURM_PARTITION:-debug}"
TIMEOUT="${MAMBAMIA_SLURM_TIMEOUT:-90}"
CLUSTER=mambamia

case "$ACCOUNTING" in
  dbd|none) ;;
  *) echo "MAMBAMIA_SLURM_ACCOUNTING=$ACCOUNTING: expected 'dbd' or 'none'" >&2; exit 2 ;;
esac

export SLURM_CONF="$SDIR/etc/slurm.conf"
# the daemons live in /usr/sbin, which a non-login or non-root PATH may lack
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { printf '[slurm-local] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true if $SDIR/run/NAME.pid names a live process whose command line contains NAME
# (guards against a stale pid file whose pid was reused by another program).
pid_alive() {
  local name=$1 pidfile="$SDIR/run/$1.pid" pid
  [[ -s $pidfile ]] || return 1
  pid=$(tr -dc '0-9' < "$pidfile")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

pid_of() { tr -dc '0-9' < "$SDIR/run/$1.pid"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# stop_daemon NAME: SIGTERM the pid in NAME's pid file, wait, SIGKILL if still there; no-op if not running.
stop_daemon() {
  local name=$1 pid i
  if ! pid_alive "$name"; then
    rm -f "$SDIR/run/$name.pid"
    return 0
  fi
  pid=$(pid_of "$name")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.25
  done
  if [[ -d /proc/$pid ]]; then
    log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$SDIR/run/$name.pid"
}

# node_state: the local node's state as sinfo prints it (idle, mixed, down*, ...), empty if unreachable.
# Without a live slurmctld sinfo would retry for ~20 s, so ask only when its pid file names one.
node_state() {
  pid_alive slurmctld || return 0
  timeout 10 sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n1
}
