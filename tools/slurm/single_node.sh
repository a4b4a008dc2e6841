#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for trying tools/slurm/eval.sbatch and for
# crates/cli/tests/slurm_eval.rs: installs Debian's slurm-wlm and munge when missing, writes a minimal slurm.conf (this
# host as the one node, all its CPUs and memory, no cgroups, no accounting database), and starts munged,
# slurmctld and slurmd as daemons (no systemd needed). Idempotent. Needs root.
#
#   usage: tools/slurm/single_node.sh [start|stop|status]      (default: start)
set -euo pipefail
CONF_DIR=/etc/slurm
STATE=/var/lib/latentmas-slurm
log() { echo "slurm single_node: $*" >&2; }
[[ "$(id -u)" == 0 ]] || { log "error: needs root (installs packages, starts daemons)"; exit 1; }

stop() {
  # By the pid files this configuration gives the daemons: never another instance by name.
  local d f
  for d in slurmd slurmctld; do
    f="${STATE}/${d}.pid"
    [[ -s "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true
  done
  log "stopped slurmd and slurmctld"
}

status() { sinfo -h -o '%N %T %c CPUs %m MB' 2>&1; }

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (Debian packages)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
  fi
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,d,log} /run/munge
  chown slurm:slurm "$STATE"/ctld
  cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by latentmas tools/slurm/single_node.sh: one node, no cgroups, no accounting.
ClusterName=latentmas-local
SlurmctldHost=${host}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MaxArraySize=10001
SchedulerType=sched/backfill
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
  [[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key /run/munge
  chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
  for _ in $(seq 1 30); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      log "up: $(status)"
      return 0
    fi
    sleep 1
  done
  log "error: the node did not come up within 30 s: $(status); logs in ${STATE}/log"
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) log "usage: $0 [start|stop|status]"; exit 64 ;;
esac
