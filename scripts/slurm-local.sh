#!/usr/bin/env bash
# A real Slurm cluster on this machine, for trying and testing examples/slurm/*.sbatch:
# slurmctld + slurmd (one node with all the CPUs, or N virtual nodes sharing them), with every
# state, pid, log and spool file under DIR. No munge (auth/none, cred/none), no accounting.
# Needs root and Debian's slurm-wlm (`apt-get install slurm-wlm`: it starts no daemon).
#
#   scripts/slurm-local.sh start DIR    write DIR/slurm.conf, start the daemons, wait for idle
#   scripts/slurm-local.sh stop DIR     cancel the jobs, stop the daemons by their pid files
#   scripts/slurm-local.sh env DIR      print `export SLURM_CONF=...` (use: eval "$(... env DIR)")
#   scripts/slurm-local.sh status DIR   sinfo + squeue
#
# Environment (start): SLURM_LOCAL_NODES (1; N > 1 gives virtual nodes n1..nN, the CPUs split
# between them), SLURM_LOCAL_CPUS (CPUs per node; default nproc / N), SLURM_LOCAL_PORT (the
# slurmctld port; slurmd uses the next N; default: a free port from 20000 up).
# Then: eval "$(scripts/slurm-local.sh env DIR)"; sinfo; sbatch ...; srun --mpi=pmix -n 2 ...
set -euo pipefail

die() { echo "slurm-local: $*" >&2; exit 1; }
usage() { sed -n '6,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -eq 2 ] || usage
CMD=$1
[ "$CMD" = start ] && mkdir -p "$2"
S=$(realpath -m "$2")
CONF=$S/slurm.conf

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pids of our daemons, from their pid files, only if they still run our config.
our_pids() {
  local f pid
  for f in "$S"/slurmctld.pid "$S"/slurmd-*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$CONF"; then
      echo "$pid"
    fi
  done
}

start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs jobs as their users)"
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null; then
    die "slurmctld/slurmd not found: apt-get install slurm-wlm"
  fi
  id slurm >/dev/null 2>&1 || die "no 'slurm' user (Debian's slurm-wlm creates it)"
  if [ -n "$(our_pids)" ]; then
    echo "slurm-local: already running in $S" >&2
    return 0
  fi
  local nodes=${SLURM_LOCAL_NODES:-1} ncpu host port mem
  ncpu=$(nproc)
  local cpus=${SLURM_LOCAL_CPUS:-$(( ncpu / nodes > 0 ? ncpu / nodes : 1 ))}
  host=$(hostname -s)
  # memory is not a scheduled resource (CR_Core), but report it, so --mem requests work
  mem=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  mem=$(( mem / nodes ))
  port=${SLURM_LOCAL_PORT:-}
  if [ -z "$port" ]; then
    port=$(( 20000 + RANDOM % 20000 ))
    local i ok
    for _ in $(seq 200); do
      ok=1
      for i in $(seq 0 "$nodes"); do port_free $((port + i)) || { ok=0; break; }; done
      [ $ok = 1 ] && break
      port=$(( 20000 + RANDOM % 20000 ))
    done
  fi

  mkdir -p "$S/state" "$S/log"
  # the daemons of user slurm must reach DIR (mktemp -d makes it 0700)
  chmod 755 "$S"
  chown slurm:slurm "$S/state" "$S/log"
  local p=$S
  while [ "$p" != / ]; do
    case "$(stat -c %A "$p" | cut -c10)" in x|t) ;; *)
      echo "slurm-local: warning: $p is not searchable by others; slurmctld (user slurm) may fail" >&2 ;;
    esac
    p=$(dirname "$p")
  done

  {
    echo "# written by scripts/slurm-local.sh; all state under $S"
    echo "ClusterName=dslocal"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$port"
    echo "SlurmUser=slurm"
    echo "SlurmdUser=root"
    echo "AuthType=auth/none"
    echo "CredType=cred/none"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "MpiDefault=none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "SchedulerType=sched/backfill"
    # a backfill pass every 2 s (default 30): a released requeued job starts within seconds
    echo "SchedulerParameters=bf_interval=2"
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "StateSaveLocation=$S/state"
    echo "SlurmctldPidFile=$S/slurmctld.pid"
    echo "SlurmctldLogFile=$S/log/slurmctld.log"
    echo "SlurmdPidFile=$S/slurmd-%n.pid"
    echo "SlurmdLogFile=$S/log/slurmd-%n.log"
    echo "SlurmdSpoolDir=$S/spool-%n"
    echo "TmpFS=$S/tmp-%n"
    echo "MinJobAge=600"
    echo "KillWait=30"
    echo "InactiveLimit=0"
    if [ "$nodes" -eq 1 ]; then
      echo "SlurmdPort=$((port + 1))"
      echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    else
      echo "NodeName=n[1-$nodes] NodeHostname=$host NodeAddr=127.0.0.1" \
           "Port=[$((port + 1))-$((port + nodes))] CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    fi
    echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF"

  local names=()
  if [ "$nodes" -eq 1 ]; then names=("$host"); else for i in $(seq "$nodes"); do names+=("n$i"); done; fi
  for n in "${names[@]}"; do mkdir -p "$S/spool-$n" "$S/tmp-$n"; done

  export SLURM_CONF=$CONF
  slurmctld -f "$CONF" || die "slurmctld failed to start: $S/log/slurmctld.log"
  for n in "${names[@]}"; do
    if [ "$nodes" -eq 1 ]; then slurmd -f "$CONF"; else slurmd -f "$CONF" -N "$n"; fi ||
      die "slurmd $n failed to start: $S/log/slurmd-$n.log"
  done
  for _ in $(seq 300); do
    if [ "$(sinfo -h -o '%t' 2>/dev/null | sort -u | tr -d '\n')" = idle ]; then
      echo "slurm-local: $nodes node(s) x $cpus CPUs idle (SLURM_CONF=$CONF)" >&2
      return 0
    fi
    sleep 0.1
  done
  sinfo >&2 || true
  die "the nodes did not become idle in 30 s; logs in $S/log"
}

stop() {
  [ -f "$CONF" ] || return 0
  export SLURM_CONF=$CONF
  local pids
  pids=$(our_pids)
  [ -n "$pids" ] || return 0
  # end the jobs first, so no slurmstepd outlives its slurmd
  if jobs=$(timeout 5 squeue -h -o %i 2>/dev/null) && [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    timeout 5 scancel $jobs 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 100); do
    pids=$(our_pids)
    [ -z "$pids" ] && return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  status) export SLURM_CONF=$CONF; sinfo; squeue ;;
  *) usage ;;
esac
