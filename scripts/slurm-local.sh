#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for `pgcore compute --cluster slurm` and its test.
#
# Installs slurm-wlm and munge if missing (Debian/Ubuntu, as root), writes a minimal
# slurm.conf for this host, creates a munge key, starts munged, slurmctld and slurmd without
# systemd and waits until `sinfo` shows the node idle. Running it again when the cluster is
# up does nothing. Stop it with: pkill -x slurmd; pkill -x slurmctld; pkill -x munged.
set -euo pipefail

CONF_DIR=/etc/slurm
HOST=$(hostname -s)

log() { echo "slurm-local: $*"; }

# A daemon counts as running only if it is alive (a zombie left by a killed one does not).
running() { pgrep -x "$1" -r R,S,D >/dev/null; }

node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n1; }

if command -v sinfo >/dev/null && [ "$(node_state)" = idle ]; then
  log "node $HOST already idle"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-local: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# Memory the node offers: what the kernel reports, less a margin for the daemons, so slurmd's
# own measurement never falls below it (the node would then be drained).
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
CPUS=$(nproc)

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: one node, one partition, everything as root.
ClusterName=pgcore
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# Processes are tracked through /proc (ProctrackType above), so no cgroup.conf is needed.

if [ ! -s /etc/munge/munge.key ]; then
  log "creating a munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key

if ! running munged; then
  log "starting munged"
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged
  else
    munged --force
  fi
fi
munge -n | unmunge >/dev/null  # fails here, with munge's message, if authentication does not work

if ! running slurmctld; then
  log "starting slurmctld"
  slurmctld || { echo "slurm-local: slurmctld did not start:" >&2; tail -n 20 /var/log/slurm/slurmctld.log >&2; exit 1; }
fi
if ! running slurmd; then
  log "starting slurmd"
  slurmd || { echo "slurm-local: slurmd did not start:" >&2; tail -n 20 /var/log/slurm/slurmd.log >&2; exit 1; }
fi

for _ in $(seq 60); do
  state=$(node_state || true)
  case "$state" in
    idle) log "node $HOST idle ($CPUS CPUs, ${MEM_MB} MB)"; sinfo; exit 0 ;;
    drain*|down*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "slurm-local: node $HOST not idle after 60 s (state: ${state:-none}); see /var/log/slurm/" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
