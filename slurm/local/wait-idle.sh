#!/usr/bin/env bash
# Wait until the local cluster's node accepts jobs (idle, mixed or allocated), at most
# $MAMBAMIA_SLURM_TIMEOUT seconds. A node left down/drained by an earlier run is resumed once.
# Exit 0 when usable, 1 on timeout (printing the node state and reason).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

end=$((SECONDS + TIMEOUT))
resumed=0
while :; do
  state=$(node_state || true)
  case "$state" in
    idle* | mixed* | allocated* | completing*)
      [[ $state == *'*' ]] || { log "node localhost: $state"; exit 0; } ;;  # trailing * = not responding
    down* | drain* | fail*)
      if ((resumed == 0)); then
        log "node localhost is $state: resuming it"
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  if ((SECONDS >= end)); then
    log "node localhost not usable after ${TIMEOUT}s (state '${state:-unreachable}')"
    scontrol show node localhost 2>&1 | grep -E 'State=|Reason=' >&2 || true
    exit 1
  fi
  sleep 0.5
done
