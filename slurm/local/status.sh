#!/usr/bin/env bash
# Print which slurm/local daemons run (pid from their pid files) and the node state.
# Exit 0 if the cluster is up (every daemon alive and the node usable), 1 otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

daemons=(munged slurmctld slurmd)
[[ $ACCOUNTING == dbd ]] && daemons=(munged mariadbd slurmdbd slurmctld slurmd)
ok=0
for d in "${daemons[@]}"; do
  if pid_alive "$d"; then printf '%-10s running (pid %s)\n' "$d" "$(pid_of "$d")"
  else printf '%-10s not running\n' "$d"; ok=1; fi
done
state=$(node_state || true)
printf '%-10s %s\n' node "${state:-unreachable}"
printf 'SLURM_CONF=%s\n' "$SLURM_CONF"
case "$state" in idle | mixed | allocated | completing) ;; *) ok=1 ;; esac
exit $ok
