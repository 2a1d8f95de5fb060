#!/usr/bin/env bash
# Stop the daemons that slurm/local/start.sh started, by the pids in their pid files (never by name):
# slurmd, slurmctld, slurmdbd, mariadbd, munged. Succeeds when nothing runs.
#
# Usage: slurm/local/stop.sh [--purge]     --purge also deletes $MAMBAMIA_SLURM_DIR (state, logs, database)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (expected --purge)" ;;
esac

if [[ -d $SDIR/run ]]; then
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_daemon "$d"
  done
fi
if ((purge)) && [[ -d $SDIR ]]; then
  [[ -f $SDIR/etc/slurm.conf || -d $SDIR/run ]] || die "$SDIR does not look like a slurm/local state dir: not deleting it"
  log "deleting $SDIR"
  rm -rf "$SDIR"
fi
log "stopped"
