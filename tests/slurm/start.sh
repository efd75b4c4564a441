#!/usr/bin/env bash
# Start a single-node Slurm (munged, slurmctld, slurmd) whose every file lives in DIR; root, no systemd.
#
#   tests/slurm/start.sh DIR      then   export SLURM_CONF=DIR/slurm.conf
#
# munged gets a fresh key and a private socket, slurm.conf names one node (`hostname -s`, reached on
# 127.0.0.1) with 2 CPUs, no cgroups and no accounting, on a free pair of ports in 16817-16976.
# Returns once `sinfo` shows the node idle; fails (after writing the daemons' logs to stderr) otherwise.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a user's PATH may lack
DIR=$(mkdir -p "${1:?usage: start.sh DIR}" && cd "$1" && pwd)
TIMEOUT=${SLURM_START_TIMEOUT:-30}
HOST=$(hostname -s)
mkdir -p "$DIR/state" "$DIR/spool"

fail() {
    echo "start.sh: $*" >&2
    tail -n 20 "$DIR"/*.log >&2 2>/dev/null || true
    exit 1
}

# A random start, so that two clusters started at the same moment (two test runs) do not pick the same pair.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=$((16817 + 2 * (RANDOM % 80)))
tries=0
while listening "$port" || listening "$((port + 1))"; do
    port=$((16817 + 2 * (RANDOM % 80)))
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || fail "no free pair of ports in 16817-16976"
done

# munged wants its socket in a folder every user can traverse, all the way up (DIR may sit in a private
# one), and a socket path is limited to about 100 bytes: the socket gets a short folder of its own.
SOCKET_DIR=$(mktemp -d /tmp/mdyn-munge.XXXXXX)
chmod 755 "$SOCKET_DIR"
echo "$SOCKET_DIR" >"$DIR/munge.socket-dir"
SOCKET="$SOCKET_DIR/munge.socket"
rm -f "$DIR/munge.key"
mungekey --create --keyfile="$DIR/munge.key"
chmod 400 "$DIR/munge.key"
munged --key-file="$DIR/munge.key" --socket="$SOCKET" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" || fail "munged did not start"

cat >"$DIR/slurm.conf" <<CONF
ClusterName=mdyn-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CryptoType=crypto/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to squeue for an hour: without accounting it is the only record of their state.
MinJobAge=3600
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" -N "$HOST" || fail "slurmd did not start"

deadline=$((SECONDS + TIMEOUT))
until [ "$(sinfo -h -n "$HOST" -o %t 2>/dev/null)" = idle ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "node $HOST not idle after ${TIMEOUT}s"
    sleep 0.1
done
echo "slurm up: SLURM_CONF=$SLURM_CONF (ports $port, $((port + 1)))"
