#!/usr/bin/env bash
# `make bench`: pg_safe_upgrade against pgBackRest and raw copies, measured as a client sees it, on
# a server that pgbench keeps writing to at full speed. See docs/benchmarks.md.
#
# For each snapshot method (agent setting snapshot_method: basebackup on the filesystem of
# BENCH_WORK_DIR; reflink on an XFS filesystem with reflink, made on a loop device; or the agent's
# pgBackRest backend, `sandbox up --backend pgbackrest`, on the filesystem of BENCH_WORK_DIR) and
# each size, it creates a sandbox (the real extension, scheduler and agent), loads the data and
# measures:
#   ours, BENCH_RUNS real upgrades that fail verification and roll back automatically, each with
#     pgbench writing from begin to the terminal state:
#       - rollback downtime seen by a client: su-bench-probe commits a write every 5 ms; the longest
#         span from a refused write to the next accepted one;
#       - the whole upgrade (begin to terminal state), its peak extra disk (used bytes of the
#         filesystems holding the data directory, snapshots and work directories, sampled every
#         100 ms, minus the value at begin) and the WAL written meanwhile;
#       - the snapshot job's duration, and pgbench's tps in its window / the baseline tps; with
#         the pgBackRest backend, the first (full) and later (incremental) snapshots apart;
#   pgBackRest in the same sandbox: full backups with pgbench writing (duration, tps), delta
#     restores to a named restore point with pgbench writing until the stop, the same prober
#     measuring refused write to accepted write;
#   raw copies of the data directory (cp -a, with --reflink=always on reflink), pgbench writing;
#   the idle scheduler's CPU and wakeups (first cell only).
# With the basebackup method, a standbys cell per size (bench/lib/standbys.sh): a sandbox with one
# streaming standby (`sandbox up --standbys 1`), BENCH_RUNS upgrades that roll back, each timed
# from the rollback's start until the standby streams on the primary's new timeline (the agent
# rewinds it), against rebuilding the standby with pg_basebackup, pgbench writing throughout.
# The pgBackRest backend's cells are also set against the local backend's at the same size.
# Then it writes $BENCH_RESULTS_DIR/<timestamp>.json, one chart per figure against size, and
# prints each target as MET, MISSED or NOT EVALUATED.
#
# Knobs (environment):
#   BENCH_METHODS        snapshot methods (default "basebackup reflink pgbackrest")
#   BENCH_SIZES          sizes in MB for basebackup and pgbackrest (default "1024 4096"); "small" = 100,
#                        "tiny" = 8
#   BENCH_REFLINK_SIZES  sizes in MB for reflink (default "1024 4096 16384"); "small", "tiny" too
#   BENCH_RUNS           runs per measurement (default 3)
#   BENCH_CLIENTS        pgbench clients and threads (default 2)
#   BENCH_TPS_S          seconds of the baseline pgbench run (default 10)
#   BENCH_IDLE_S         seconds to watch the idle scheduler (default 60)
#   BENCH_MAX_RATE       agent.backup_max_rate for our snapshots (pg_basebackup --max-rate)
#   BENCH_CHECKPOINT     agent.backup_checkpoint for our snapshots: fast (default) or spread
#   BENCH_STANDBYS       1 (default): the standbys cells, at BENCH_SIZES, when BENCH_METHODS has
#                        basebackup; 0: none
#   BENCH_ONLY=standbys  only the standbys cells (no method cell; their targets are NOT EVALUATED)
#   BENCH_WORK_DIR       scratch directory (default: a new directory under /var/tmp); removed at the end
#   BENCH_KEEP=1         keep the scratch directory and leave the clusters running
#   BENCH_RESULTS_DIR (default bench/results), BUILD_DIR (default build), BENCH_CHART=0 (no PNG)
# The parts live in bench/lib/ (common, observers, filesystems, cell, ours, pgbackrest,
# cell_report, standbys, report), sourced below in that order.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
CLI="$BUILD_DIR/safe-upgrade"
PROBE="$BUILD_DIR/su-bench-probe"
PGBIN="$(pg_config --bindir)"
RUNS="${BENCH_RUNS:-3}"
CLIENTS="${BENCH_CLIENTS:-2}"
IDLE_S="${BENCH_IDLE_S:-60}"
TPS_S="${BENCH_TPS_S:-10}"
MAX_RATE="${BENCH_MAX_RATE:-}"
CHECKPOINT="${BENCH_CHECKPOINT:-fast}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$ROOT/bench/results}"
CHART="${BENCH_CHART:-1}"
METHODS="${BENCH_METHODS:-basebackup reflink pgbackrest}"
STANDBYS="${BENCH_STANDBYS:-1}"
ONLY="${BENCH_ONLY:-}"
case "$ONLY" in ""|standbys) ;; *) echo "BENCH_ONLY=$ONLY: only \"standbys\" is known" >&2; exit 1 ;; esac
sizes_of() { case "$1" in small) echo 100 ;; tiny) echo 8 ;; *) echo "$1" ;; esac; }
SIZES="$(sizes_of "${BENCH_SIZES:-1024 4096}")"
REFLINK_SIZES="$(sizes_of "${BENCH_REFLINK_SIZES:-1024 4096 16384}")"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
num() { [ -n "${1:-}" ] && [ "$1" != null ] && echo "$1" || echo null; }  # empty -> JSON null

for lib in common observers filesystems cell ours pgbackrest cell_report standbys; do
  . "$ROOT/bench/lib/$lib.sh"
done

IDLE_JSON=""
SKIPPED=()
CELL_METHODS="$METHODS"; [ "$ONLY" = standbys ] && CELL_METHODS=""
for m in $CELL_METHODS; do
  case "$m" in
    basebackup|pgbackrest)
      for s in $SIZES; do
        need="$("${m}_need_mb" "$s")"
        if [ "$(free_mb "$W")" -lt "$need" ]; then
          why="not enough disk for a $s MB cell: $(free_mb "$W") MB free under $W, about $need MB needed"
          say "$m at $s MB skipped: $why"
          SKIPPED+=("$(jq -n --arg m "$m" --argjson s "$s" --arg why "$why" '{method: $m, size_mb: $s, reason: $why}')")
          continue
        fi
        mkdir -p "$W/$m-$s"; bench_cell "$m" "$s" "$W/$m-$s"
      done ;;
    reflink)
      for s in $REFLINK_SIZES; do
        if make_reflink_fs "$s"; then
          bench_cell reflink "$s" "$FSROOT"
        else
          say "reflink skipped: $REFLINK_WHY"
          SKIPPED+=("$(jq -n --arg m reflink --argjson s "$s" --arg why "$REFLINK_WHY" '{method: $m, size_mb: $s, reason: $why}')")
          break
        fi
      done ;;
    *) die "unknown method in BENCH_METHODS: $m (basebackup, reflink, pgbackrest)" ;;
  esac
done
for m in basebackup reflink pgbackrest; do
  if [[ " $METHODS " != *" $m "* ]]; then
    SKIPPED+=("$(jq -n --arg m "$m" '{method: $m, reason: "not in BENCH_METHODS"}')")
  elif [ "$ONLY" = standbys ]; then
    SKIPPED+=("$(jq -n --arg m "$m" '{method: $m, reason: "BENCH_ONLY=standbys"}')")
  fi
done
# the standbys cells (basebackup only)
if [ "$STANDBYS" = 0 ]; then
  SKIPPED+=("$(jq -n '{method: "standbys", reason: "BENCH_STANDBYS=0"}')")
elif [[ " $METHODS " != *" basebackup "* ]]; then
  SKIPPED+=("$(jq -n '{method: "standbys", reason: "basebackup not in BENCH_METHODS"}')")
else
  bench_standbys
fi

. "$ROOT/bench/lib/report.sh"
