#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm tests (`tests/slurm.rs`): installs
# Debian's slurm-wlm and munge if missing, writes a munge key and a slurm.conf naming this
# host, starts munged, slurmctld and slurmd if they are not running, and waits until the
# node is idle. Idempotent; run as root. Fails (exit 1) when the node does not come up.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/slurm-up.sh: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

# munge: a key readable by the munge user alone, and its daemon.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# slurm.conf: this host as the controller and the one node of the default partition.
host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 - 512 ))
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=$(cat <<CONF
# Written by traj's ci/slurm-up.sh: one node on localhost, no accounting, no cgroups.
ClusterName=traj-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
restart=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  restart=1
fi

running() { pgrep -x "$1" >/dev/null; }
if [ "$restart" = 1 ] && running slurmctld; then
  scontrol reconfigure
fi
running slurmctld || /usr/sbin/slurmctld
running slurmd || /usr/sbin/slurmd

# The node is idle (or busy with jobs of an earlier run) within seconds.
for _ in $(seq 60); do
  state=$(sinfo --noheader --nodes="$host" --format=%T 2>/dev/null || true)
  case "$state" in
    idle*|mixed*|allocated*) echo "slurm: node $host $state"; exit 0 ;;
    down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "ci/slurm-up.sh: the node $host did not become idle (sinfo says '${state:-nothing}');" \
     "see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
