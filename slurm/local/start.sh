#!/usr/bin/env bash
# Start a single-node Slurm cluster on localhost and wait until its node is idle.
#
# Usage: sudo slurm/local/start.sh         then: source "${MAMBAMIA_SLURM_DIR:-/tmp/mambamia-slurm}/env.sh"
#
# Starts, in order and each only if its pid file does not already name a live process:
#   munged      own key and socket under $MAMBAMIA_SLURM_DIR/munge (the system munge is left alone)
#   mariadbd    (accounting=dbd) own datadir, 127.0.0.1:$PORT+3, small buffers
#   slurmdbd    (accounting=dbd) 127.0.0.1:$PORT+2
#   slurmctld   $PORT, slurmd $PORT+1; node "localhost" with CPUs=nproc, partition $MAMBAMIA_SLURM_PARTITION
# Idempotent: with everything running it only re-checks that the node answers, and succeeds.
# Writes $MAMBAMIA_SLURM_DIR/env.sh (exports SLURM_CONF) for the shells and tests that use the cluster.
# Knobs: see slurm/local/common.sh. Undo with slurm/local/stop.sh (add --purge to delete all state).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

((EUID == 0)) || die "run as root (sudo -E $0): slurmd must start jobs as their submitting user"
for b in munged slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null || die "$b not found: run slurm/local/install.sh first"
done
if [[ $ACCOUNTING == dbd ]]; then
  for b in slurmdbd mariadbd mariadb-install-db; do
    command -v "$b" >/dev/null || die "$b not found: run slurm/local/install.sh (or MAMBAMIA_SLURM_ACCOUNTING=none)"
  done
fi
((${#SDIR} <= 80)) || die "MAMBAMIA_SLURM_DIR=$SDIR is too long for a unix socket path (max 80 chars)"

t0=$SECONDS
mkdir -p "$SDIR"/{etc,run,log,state,spool,munge}
chmod 755 "$SDIR" "$SDIR/etc"
chmod 700 "$SDIR/munge"

CPUS="${MAMBAMIA_SLURM_CPUS:-$(nproc)}"
MEM_MB="${MAMBAMIA_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)}"
DEF_MEM=$((MEM_MB / CPUS < 2048 ? MEM_MB / CPUS : 2048))

# ------------------------------------------------------------------------------------------ configs
render() {  # render TEMPLATE OUT: replace @NAME@ placeholders
  sed -e "s|@DIR@|$SDIR|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@USER@|root|g" \
      -e "s|@CTLD_PORT@|$PORT|g" -e "s|@SLURMD_PORT@|$((PORT + 1))|g" \
      -e "s|@DBD_PORT@|$((PORT + 2))|g" -e "s|@DB_PORT@|$((PORT + 3))|g" \
      -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@DEF_MEM@|$DEF_MEM|g" \
      -e "s|@PARTITION@|$PARTITION|g" -e "s|@ACCT_MODE@|$ACCOUNTING|g" \
      -e "s|@ACCOUNTING@|$ACCT_LINES|g" -e "s|@DB_PASS@|${DB_PASS:-}|g" "$1" > "$2.tmp"
  mv "$2.tmp" "$2"
}
# (sed turns each "\n" of the replacement into a new line)
if [[ $ACCOUNTING == dbd ]]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd\\nAccountingStorageHost=localhost"
  ACCT_LINES+="\\nAccountingStoragePort=$((PORT + 2))"
  # for the slurmdbd connection Slurm takes the munge socket from AccountingStoragePass, not AuthInfo
  ACCT_LINES+="\\nAccountingStoragePass=$SDIR/munge/munge.socket"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi
render "$SLURM_LOCAL_HERE/slurm.conf.in" "$SDIR/etc/slurm.conf"
chmod 644 "$SDIR/etc/slurm.conf"
printf '# source me: points Slurm commands at the mambamia local cluster\nexport SLURM_CONF=%q\n' \
  "$SLURM_CONF" > "$SDIR/env.sh"

# ------------------------------------------------------------------------------------------- munge
if ! pid_alive munged; then
  key="$SDIR/munge/munge.key"
  if [[ ! -s $key ]]; then
    if command -v mungekey >/dev/null; then mungekey -c -k "$key"
    else dd if=/dev/urandom of="$key" bs=1024 count=1 status=none; fi
  fi
  chmod 600 "$key"
  rm -f "$SDIR/munge/munge.socket" "$SDIR/munge/munge.socket.lock"
  log "starting munged"
  munged --force --socket="$SDIR/munge/munge.socket" --key-file="$key" --pid-file="$SDIR/run/munged.pid" \
    --log-file="$SDIR/log/munged.log" --seed-file="$SDIR/munge/munged.seed" --num-threads=2
  wait_for "$TIMEOUT" "munged" pid_alive munged || die "munged did not start: see $SDIR/log/munged.log"
fi

# ------------------------------------------------------------------------------ accounting database
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ $ACCOUNTING == dbd ]]; then
  mkdir -p "$SDIR/db"
  chmod 700 "$SDIR/db"
  [[ -s $SDIR/db/pass ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$SDIR/db/pass")
  DB_PASS=$(cat "$SDIR/db/pass")
  if ! pid_alive mariadbd; then
    if [[ ! -d $SDIR/db/data/mysql ]]; then
      log "initialising MariaDB datadir"
      mariadb-install-db --no-defaults --datadir="$SDIR/db/data" --user=root \
        --auth-root-authentication-method=normal --skip-test-db > "$SDIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed: see $SDIR/log/mariadb-install.log"
    fi
    cat > "$SDIR/db/init.sql" <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
    chmod 600 "$SDIR/db/init.sql"
    log "starting mariadbd on 127.0.0.1:$((PORT + 3))"
    # innodb sizes follow slurmdbd's recommendations loosely while staying small (CI: 2 cores, 24 GiB)
    setsid mariadbd --no-defaults --user=root --datadir="$SDIR/db/data" --socket="$SDIR/db/mysqld.sock" \
      --port=$((PORT + 3)) --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$SDIR/run/mariadbd.pid" \
      --log-error="$SDIR/log/mariadb.log" --init-file="$SDIR/db/init.sql" --performance-schema=OFF \
      --innodb-buffer-pool-size=128M --innodb-log-file-size=32M --innodb-lock-wait-timeout=900 \
      --max-connections=50 < /dev/null > /dev/null 2>&1 &
    wait_for "$TIMEOUT" "mariadbd on port $((PORT + 3))" port_open $((PORT + 3)) \
      || die "mariadbd did not start: see $SDIR/log/mariadb.log"
    wait_for 10 "mariadbd pid file" pid_alive mariadbd || die "mariadbd wrote no pid file"
  fi
  render "$SLURM_LOCAL_HERE/slurmdbd.conf.in" "$SDIR/etc/slurmdbd.conf"
  chmod 600 "$SDIR/etc/slurmdbd.conf"
  if ! pid_alive slurmdbd; then
    log "starting slurmdbd on port $((PORT + 2))"
    slurmdbd
    wait_for "$TIMEOUT" "slurmdbd on port $((PORT + 2))" port_open $((PORT + 2)) \
      || die "slurmdbd did not start: see $SDIR/log/slurmdbd.log"
    wait_for 10 "slurmdbd pid file" pid_alive slurmdbd || die "slurmdbd wrote no pid file"
  fi
  # the cluster must exist in the database before slurmctld registers (no-op when it does)
  if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
fi

# ------------------------------------------------------------------------------------ slurm daemons
if ! pid_alive slurmctld; then
  log "starting slurmctld on port $PORT"
  slurmctld -f "$SLURM_CONF"
  wait_for "$TIMEOUT" "slurmctld" pid_alive slurmctld || die "slurmctld did not start: see $SDIR/log/slurmctld.log"
fi
if ! pid_alive slurmd; then
  log "starting slurmd on port $((PORT + 1))"
  slurmd -f "$SLURM_CONF" -N localhost
  wait_for "$TIMEOUT" "slurmd" pid_alive slurmd || die "slurmd did not start: see $SDIR/log/slurmd.log"
fi

"$SLURM_LOCAL_HERE/wait-idle.sh" || die "node never became usable: see $SDIR/log/slurmd.log and slurmctld.log"
log "cluster '$CLUSTER' up in $((SECONDS - t0)) s: $CPUS CPUs, ${MEM_MB} MiB, partition '$PARTITION', accounting=$ACCOUNTING"
log "use it with: source $SDIR/env.sh"
