#!/usr/bin/env bash
# Install the Debian packages of a single-node Slurm cluster: munge, slurmctld, slurmd, the client
# commands and, unless MAMBAMIA_SLURM_ACCOUNTING=none, slurmdbd + MariaDB for real job states in sacct.
#
# Usage: slurm/local/install.sh            (as root, or with sudo available; Debian/Ubuntu)
# Idempotent: packages already present are not reinstalled, and nothing is started (see start.sh).
# Debian's postinst scripts would start the daemons under systemd; where systemd runs we disable
# them again so that only start.sh's own daemons (with their own config and ports) run.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pkgs=(munge slurmctld slurmd slurm-client)
bins=(munged slurmctld slurmd sinfo)
if [[ $ACCOUNTING == dbd ]]; then
  pkgs+=(slurmdbd mariadb-server)
  bins+=(slurmdbd mariadbd)
fi

missing=()
for i in "${!bins[@]}"; do
  command -v "${bins[$i]}" >/dev/null 2>&1 || missing+=("${pkgs[$i]}")
done
if ((${#missing[@]} == 0)); then
  log "already installed: ${pkgs[*]}"
  exit 0
fi

SUDO=""
if ((EUID != 0)); then
  command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
  SUDO=sudo
fi
command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} with your package manager"

t0=$SECONDS
log "installing ${missing[*]}"
# apt-get update only if the package lists have never been fetched (fresh containers)
if ! apt-cache show slurmctld >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
# policy-rc.d exit 101 keeps the postinst scripts from starting daemons we did not ask for
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  made_policy=1
fi
trap '[[ $made_policy == 1 ]] && $SUDO rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now munge slurmctld slurmd slurmdbd mariadb >/dev/null 2>&1 || true
fi
log "installed in $((SECONDS - t0)) s: $(slurmctld -V)"
