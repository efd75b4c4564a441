#!/usr/bin/env bash
# Stop the Slurm that start.sh DIR started: cancel its jobs, then end slurmd, slurmctld and munged by PID.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a user's PATH may lack
DIR=$(cd "${1:?usage: stop.sh DIR}" && pwd)
TIMEOUT=${SLURM_STOP_TIMEOUT:-15}

[ -f "$DIR/slurm.conf" ] && SLURM_CONF="$DIR/slurm.conf" timeout 5 scancel --full --quiet --user="$(id -un)" || true

# A daemon counts as stopped once gone or a zombie (a PID 1 that does not reap leaves zombies behind).
alive() { [ -n "$1" ] && [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

status=0
for daemon in slurmd slurmctld munged; do
    pidfile="$DIR/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + TIMEOUT))
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
        echo "stop.sh: $daemon ($pid) ignored SIGTERM for ${TIMEOUT}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
        status=1
    fi
    rm -f "$pidfile"
done
if [ -f "$DIR/munge.socket-dir" ]; then
    rm -rf "$(cat "$DIR/munge.socket-dir")" "$DIR/munge.socket-dir"
fi
exit $status
