#!/usr/bin/env bash
# `make bench`: pg_safe_upgrade against pgBackRest and raw copies, measured as a client sees it, on
# a server that pgbench keeps writing to at full speed. See docs/benchmarks.md.
#
# For each snapshot method (agent setting snapshot_method: basebackup on the filesystem of
# BENCH_WORK_DIR; reflink on an XFS filesystem with reflink, made on a loop device) and each size,
# it creates a sandbox (the real extension, scheduler and agent), loads the data and measures:
#   ours, BENCH_RUNS real upgrades that fail verification and roll back automatically, each with
#     pgbench writing from begin to the terminal state:
#       - rollback downtime seen by a client: su-bench-probe commits a write every 5 ms; the longest
#         span from a refused write to the next accepted one;
#       - the whole upgrade (begin to terminal state), its peak extra disk (used bytes of the
#         filesystems holding the data directory, snapshots and work directories, sampled every
#         100 ms, minus the value at begin) and the WAL written meanwhile;
#       - the snapshot job's duration, and pgbench's tps in its window / the baseline tps;
#   pgBackRest in the same sandbox: full backups with pgbench writing (duration, tps), delta
#     restores to a named restore point with pgbench writing until the stop, the same prober
#     measuring refused write to accepted write;
#   raw copies of the data directory (cp -a, with --reflink=always on reflink), pgbench writing;
#   the idle scheduler's CPU and wakeups (first cell only).
# Then it writes $BENCH_RESULTS_DIR/<timestamp>.json, one chart per figure against size, and
# prints each target as MET, MISSED or NOT EVALUATED.
#
# Knobs (environment):
#   BENCH_METHODS        snapshot methods (default "basebackup reflink")
#   BENCH_SIZES          sizes in MB for basebackup (default "1024 4096"); "small" = 100, "tiny" = 8
#   BENCH_REFLINK_SIZES  sizes in MB for reflink (default "1024 4096 16384"); "small", "tiny" too
#   BENCH_RUNS           runs per measurement (default 3)
#   BENCH_CLIENTS        pgbench clients and threads (default 2)
#   BENCH_TPS_S          seconds of the baseline pgbench run (default 10)
#   BENCH_IDLE_S         seconds to watch the idle scheduler (default 60)
#   BENCH_MAX_RATE       agent.backup_max_rate for our snapshots (pg_basebackup --max-rate)
#   BENCH_CHECKPOINT     agent.backup_checkpoint for our snapshots: fast (default) or spread
#   BENCH_WORK_DIR       scratch directory (default: a new directory under /var/tmp); removed at the end
#   BENCH_KEEP=1         keep the scratch directory and leave the clusters running
#   BENCH_RESULTS_DIR (default bench/results), BUILD_DIR (default build), BENCH_CHART=0 (no PNG)
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
METHODS="${BENCH_METHODS:-basebackup reflink}"
sizes_of() { case "$1" in small) echo 100 ;; tiny) echo 8 ;; *) echo "$1" ;; esac; }
SIZES="$(sizes_of "${BENCH_SIZES:-1024 4096}")"
REFLINK_SIZES="$(sizes_of "${BENCH_REFLINK_SIZES:-1024 4096 16384}")"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
num() { [ -n "${1:-}" ] && [ "$1" != null ] && echo "$1" || echo null; }  # empty -> JSON null

# PostgreSQL and pgBackRest run as the postgres OS user when we are root, like the sandbox.
if [ "$(id -u)" = 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
  # a prefix that execs (no fork), so that $! is the agent's own pid
  AS_PG_EXEC=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  PG_OS_USER=postgres
else
  as_pg() { "$@"; }
  AS_PG_EXEC=()
  PG_OS_USER="$(id -un)"
fi

ensure_package() {  # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "$1 is missing; install it with: sudo apt-get install -y $2"
  say "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null || {
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null; }
}

[ -x "$CLI" ] || die "$CLI not found; build first (make) or set BUILD_DIR"
[ -x "$PROBE" ] || die "$PROBE not found; build first (make) or set BUILD_DIR"
ensure_package pgbackrest pgbackrest
ensure_package pgbench postgresql-contrib-15
ensure_package jq jq
[ "$CHART" = 1 ] && ensure_package gnuplot gnuplot-nox

W="${BENCH_WORK_DIR:-$(mktemp -d /var/tmp/su-bench.XXXXXX)}"
mkdir -p "$W" "$RESULTS_DIR" "$W/cells"
chmod 0755 "$W"
chown "$PG_OS_USER" "$W"
CLK_TCK="$(getconf CLK_TCK)"

SANDBOXES=() MOUNTS=() BG_PIDS=()
cleanup() {
  local rc=$? p d
  if [ -n "${WRITERS_DIR:-}" ]; then
    touch "$WRITERS_DIR/stop"; kill "$(cat "$WRITERS_DIR/pgbench.pid" 2>/dev/null)" 2>/dev/null || true
  fi
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${BENCH_KEEP:-0}" = 1 ] && { say "kept $W"; exit $rc; }
  for d in "${SANDBOXES[@]}"; do "$CLI" sandbox down --dir "$d" >/dev/null 2>&1 || true; done
  for d in "${MOUNTS[@]}"; do
    for _ in 1 2 3 4 5; do umount "$d" 2>/dev/null && break; sleep 1; done
    mountpoint -q "$d" && umount -l "$d" 2>/dev/null || true
  done
  rm -rf "$W"
  exit $rc
}
trap cleanup EXIT

sql() { psql -X -qAt -v ON_ERROR_STOP=1 -c "$1"; }
state_of() { sql "SELECT state FROM safe_upgrade.upgrades WHERE id = $1" 2>/dev/null || true; }
# wait_state id poll_s state... : polls until the upgrade is in one of the states (900 s at most).
# The server is down for a moment during a rollback: a failed poll just polls again.
wait_state() {
  local id="$1" poll="$2"; shift 2
  local deadline=$(( $(date +%s) + 900 )) s
  while :; do
    s="$(state_of "$id")"
    for want in "$@"; do [ "$s" = "$want" ] && return 0; done
    case "$s" in succeeded|validated|blocked|failed|rolled_back|rollback_failed|cancelled)
      say "upgrade $id ended $s, expected $*"; sql "SELECT phase, level, message FROM safe_upgrade.events WHERE upgrade_id = $id ORDER BY at, id" >&2 || true
      return 1 ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || { say "upgrade $id still $s"; return 1; }
    sleep "$poll"
  done
}
# epoch of the first event of upgrade $1 whose message is LIKE $2 (and, optionally, phase $3)
event_epoch() {
  sql "SELECT extract(epoch FROM min(at)) FROM safe_upgrade.events WHERE upgrade_id = $1 AND message LIKE '$2'${3:+ AND phase = '$3'}"
}
span() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "null" || b == "null") print "null"; else printf "%.3f", b - a }'; }
pgbr() { as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }

# --- pgbench writing at full speed, restarted whenever the server drops it ----------------------
# Per-transaction logs go to $1/w<k>.<pid>[.<thread>]; pgbench exits when the server goes away (a
# rollback, a restore), and the loop starts it again until stop_writers.
start_writers() {
  local d="$1"
  mkdir -p "$d"
  (
    cd "$d"
    k=0
    while [ ! -e stop ]; do
      k=$((k + 1))
      pgbench -n -c "$CLIENTS" -j "$CLIENTS" -T 86400 -l --log-prefix="w$k" >>pgbench.out 2>&1 &
      echo $! >pgbench.pid
      wait $! || sleep 0.05
    done
  ) &
  WRITERS_PID=$!
  WRITERS_DIR="$d"
  BG_PIDS+=("$WRITERS_PID")
}
stop_writers() {
  touch "$WRITERS_DIR/stop"
  while kill -0 "$WRITERS_PID" 2>/dev/null; do  # the loop may have just started another pgbench
    kill "$(cat "$WRITERS_DIR/pgbench.pid")" 2>/dev/null || true
    sleep 0.1
  done
  wait "$WRITERS_PID" 2>/dev/null || true
}
# tps of the writers' transactions completed between epochs $2 and $3 (null if unknown). The end
# is clipped to the last logged transaction (pgbench loses its unflushed log when it is stopped).
window_tps() {
  local d="$1" a="$2" b="$3"
  [ "$a" != null ] && [ "$b" != null ] || { echo null; return; }
  cat "$d"/w[0-9]* 2>/dev/null | awk -v a="$a" -v b="$b" '
    { t = $5 + $6 / 1e6; if (t > last) last = t; if (t >= a && t <= b) n++ }
    END { if (b > last) b = last; if (b - a <= 0) print "null"; else printf "%.1f", n / (b - a) }'
}

# --- the client-side prober and the disk sampler ----------------------------------------------
# Both, as a measured window of ours runs them, for the baseline and pgBackRest's backups.
start_observers() {  # dir
  "$PROBE" disk --out "$1/disk.json" --tree "$SB" "$SB/data" "$SB/snapshots" "$SB/work" &
  OBSERVER_DISK_PID=$!
  BG_PIDS+=("$OBSERVER_DISK_PID")
  start_prober "$1/probe.json"
}
stop_observers() {
  stop_prober_when_up "$PROBER_OUT" 0
  kill -TERM "$OBSERVER_DISK_PID"; wait "$OBSERVER_DISK_PID" || true
}
start_prober() {  # out: waits until it has committed its first write
  PROBER_OUT="$1"
  "$PROBE" writes --out "$1" --state "$1.state" &
  PROBER_PID=$!
  BG_PIDS+=("$PROBER_PID")
  local deadline=$(( $(date +%s) + 30 ))
  until grep -q '^up' "$1.state" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "the prober could not write within 30 s"
    sleep 0.02
  done
}
# waits until the prober's state is "up" since after epoch $2 (600 s at most), then stops it
stop_prober_when_up() {
  local deadline=$(( $(date +%s) + 600 )) st
  while :; do
    st="$(cat "$1.state" 2>/dev/null || true)"
    awk -v s="$st" -v t="${2:-0}" 'BEGIN { split(s, f, " "); exit !(f[1] == "up" && f[2] + 0 >= t + 0) }' && break
    [ "$(date +%s)" -lt "$deadline" ] || { say "the prober saw no accepted write within 600 s"; break; }
    sleep 0.05
  done
  kill -TERM "$PROBER_PID"; wait "$PROBER_PID" || true
}

# --- agent settings: edit [agent] in the sandbox's agent.toml, restart the agent ---------------
set_agent_key() {  # key toml-value: replaces the key's line in [agent], or adds it there
  awk -v k="$1" -v v="$2" '
    /^\[/ { if (in_agent && !done) { print k " = " v; done = 1 } in_agent = ($0 == "[agent]") }
    in_agent && $1 == k && $2 == "=" { if (!done) { print k " = " v; done = 1 } next }
    { print }
    END { if (in_agent && !done) print k " = " v }' "$SB/agent.toml" >"$SB/agent.toml.new"
  mv "$SB/agent.toml.new" "$SB/agent.toml"
  chmod 0644 "$SB/agent.toml"
}
restart_agent() {  # returns 1 when the agent does not come up with this configuration
  local pid sock deadline
  pid="$(cat "$SB/agent.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sock="$(sed -n "s/^listen = [\"']unix:\(.*\)[\"']\$/\1/p" "$SB/agent.toml")"
  [ -n "$sock" ] || die "no unix: listen address in $SB/agent.toml"
  rm -f "$sock"
  # in its own session, like the sandbox starts it (a background job is no group leader, so
  # setsid does not fork and $! stays the agent's pid)
  setsid "${AS_PG_EXEC[@]}" "$SB/bin/safe-upgrade-agent" serve --config "$SB/agent.toml" </dev/null >>"$SB/agent.stderr" 2>&1 &
  pid=$!
  echo "$pid" >"$SB/agent.pid"
  deadline=$(( $(date +%s) + 20 ))
  until [ -S "$sock" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# --- the filesystem of a cell -------------------------------------------------------------------
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
pgbr_repo_mb() { echo $(( $1 * 7 / 10 * RUNS )); }  # BENCH_RUNS full backups, lz4 (half is random bytes)
# basebackup: the data, BENCH_RUNS snapshots, a clone, the parked target, the data directory set
# aside by the rollback, the WAL, and pgBackRest's repository
basebackup_need_mb() { echo $(( $1 * 11 / 10 * (5 + RUNS) + $(pgbr_repo_mb "$1") + 2048 )); }
# reflink: an XFS filesystem with reflink on a loop device, sized for the data, its copies and the
# WAL (sparse: only what is written takes space). Sets FSROOT to the mount point, or REFLINK_WHY.
# The image is capped to the free space left beside pgBackRest's repository, so that if the copies
# turn out not to share extents it is this filesystem that fills up, never the machine's.
REFLINK_WHY=""
make_reflink_fs() {
  local mb="$1" img="$W/xfs-$1.img" mnt="$W/xfs-$1"
  [ "$(id -u)" = 0 ] || { REFLINK_WHY="not root: making an XFS filesystem on a loop device needs root"; return 1; }
  command -v mkfs.xfs >/dev/null 2>&1 || ensure_package mkfs.xfs xfsprogs
  local img_mb=$(( mb * 7 / 2 + 4096 )) room=$(( $(free_mb "$W") - $(pgbr_repo_mb "$mb") - 2048 ))
  [ "$img_mb" -le "$room" ] || img_mb="$room"
  [ "$img_mb" -ge $(( mb * 22 / 10 + 2048 )) ] || {
    REFLINK_WHY="not enough disk for a $mb MB cell: $(free_mb "$W") MB free under $W"; return 1; }
  truncate -s "${img_mb}M" "$img"
  mkfs.xfs -q -f -m reflink=1 "$img" >/dev/null 2>&1 || { REFLINK_WHY="mkfs.xfs -m reflink=1 failed"; rm -f "$img"; return 1; }
  mkdir -p "$mnt"
  mount -o loop,noatime "$img" "$mnt" 2>"$W/mount.err" || {
    REFLINK_WHY="mount -o loop failed: $(head -1 "$W/mount.err")"; rm -f "$img"; return 1; }
  MOUNTS+=("$mnt")
  chown "$PG_OS_USER" "$mnt"; chmod 0755 "$mnt"
  head -c 1048576 /dev/zero >"$mnt/probe" && cp --reflink=always "$mnt/probe" "$mnt/probe.clone" 2>/dev/null || {
    REFLINK_WHY="cp --reflink=always fails on the XFS filesystem"; return 1; }
  rm -f "$mnt/probe" "$mnt/probe.clone"
  FSROOT="$mnt"
}
unmount_fs() {
  local d="$1" rest=() m
  for _ in 1 2 3 4 5; do umount "$d" 2>/dev/null && break; sleep 1; done
  mountpoint -q "$d" && { say "$d is busy; detaching it lazily"; umount -l "$d"; }
  for m in "${MOUNTS[@]}"; do [ "$m" = "$d" ] || rest+=("$m"); done
  MOUNTS=("${rest[@]}")
}

# --- one cell: a method at a size --------------------------------------------------------------
bench_cell() {
  local method="$1" mb="$2" cell="$W/$1-$2" fsroot="$3"
  mkdir -p "$cell"; chown "$PG_OS_USER" "$cell"
  SB="$fsroot/sb"
  SANDBOXES+=("$SB")
  say "== $method, $mb MB: creating the sandbox in $SB"
  "$CLI" sandbox up --dir "$SB" >/dev/null
  set -a; . "$SB/env"; set +a
  local data="$SB/data" method_config="set"

  # The agent: the method, no retention during the runs (a deletion in the middle of one would hide
  # its peak disk), the optional throttle.
  set_agent_key snapshot_method "\"$method\""
  set_agent_key snapshot_retention "$(( RUNS + 1 ))"
  [ -n "$MAX_RATE" ] && set_agent_key backup_max_rate "\"$MAX_RATE\""
  [ "$CHECKPOINT" != fast ] && set_agent_key backup_checkpoint "\"$CHECKPOINT\""
  if ! restart_agent; then
    say "the agent did not start with snapshot_method = \"$method\"; running without the key"
    method_config="rejected by the agent"
    sed -i '/^snapshot_method = /d' "$SB/agent.toml"
    restart_agent || die "the agent did not start; see $SB/agent.stderr"
  fi

  # pgBackRest: a throwaway stanza with a local repository on the scratch filesystem. Its WAL
  # archiving is switched on only for its own part, so that neither side pays for the other's.
  PGBR_CONF="$cell/pgbackrest.conf"
  mkdir -p "$cell/pgbr-repo" "$cell/pgbr-log" "$cell/pgbr-lock" "$cell/pgbr-spool"
  chown -R "$PG_OS_USER" "$cell"
  cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$cell/pgbr-repo
repo1-retention-full=99
log-path=$cell/pgbr-log
lock-path=$cell/pgbr-lock
spool-path=$cell/pgbr-spool
process-max=2
compress-type=lz4
start-fast=y
log-level-console=warn
log-level-file=info

[bench]
pg1-path=$data
pg1-socket-path=$PGHOST
pg1-port=$PGPORT
EOF
  chmod 0644 "$PGBR_CONF"
  pgbr stanza-create >/dev/null

  # Data: half pgbench tables (compressible), half random bytes (incompressible, stored inline).
  local scale=$(( mb / 2 / 15 )); [ "$scale" -ge 1 ] || scale=1
  local rnd_rows=$(( mb * 1000 / 2 ))
  say "loading: pgbench -i -s $scale and $rnd_rows rows of 1000 random bytes"
  pgbench -i -q -s "$scale" >/dev/null 2>&1
  sql "CREATE EXTENSION IF NOT EXISTS pgcrypto;
       CREATE TABLE bench_random (id bigint, payload bytea);
       ALTER TABLE bench_random ALTER payload SET STORAGE EXTERNAL;
       INSERT INTO bench_random SELECT g, gen_random_bytes(1000) FROM generate_series(1, $rnd_rows) g;
       CREATE EXTENSION su_rollback_fixture VERSION '1.0';
       CREATE TABLE poison (v int);" >/dev/null
  sql "VACUUM ANALYZE" >/dev/null
  sql "CHECKPOINT" >/dev/null
  sql "SELECT safe_upgrade.add_health_check('values_still_valid', 'SELECT coalesce(bool_and(su_rb_validate(v)), true) FROM poison', 'su_rollback_fixture')" >/dev/null
  local cluster_bytes size_mb fs_type
  cluster_bytes="$(sql "SELECT sum(pg_database_size(oid)) FROM pg_database")"
  size_mb=$(( cluster_bytes / 1048576 ))
  fs_type="$(stat -f -c %T "$data")"
  say "cluster size: $size_mb MB on $fs_type"

  # The idle scheduler, before any upgrade exists (first cell only).
  if [ -z "$IDLE_JSON" ]; then
    local wpid t1 c1 v1 t2 c2 v2 cpu wake
    wpid="$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'safe_upgrade scheduler'")"
    [ -n "$wpid" ] || die "no 'safe_upgrade scheduler' backend found"
    say "watching the idle scheduler (pid $wpid) for $IDLE_S s"
    t1="$(now)"; c1="$(awk '{ print $14 + $15 }' "/proc/$wpid/stat")"
    v1="$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$wpid/status")"
    sleep "$IDLE_S"
    t2="$(now)"; c2="$(awk '{ print $14 + $15 }' "/proc/$wpid/stat")"
    v2="$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$wpid/status")"
    cpu="$(awk -v c="$((c2 - c1))" -v hz="$CLK_TCK" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.5f", c / hz / (b - a) }')"
    wake="$(awk -v v="$((v2 - v1))" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.3f", v / (b - a) }')"
    IDLE_JSON="$(jq -n --argjson pid "$wpid" --argjson s "$(span "$t1" "$t2")" --argjson ticks "$((c2 - c1))" \
      --argjson cpu "$cpu" --argjson sw "$((v2 - v1))" --argjson wake "$wake" \
      '{pid_sampled: $pid, seconds: $s, cpu_ticks: $ticks, cpu_fraction_of_core: $cpu,
        voluntary_ctxt_switches: $sw, wakeups_per_s: $wake, wakeups_per_min: ($wake * 60)}')"
  fi

  # Baseline: the same writers (per-transaction logs), client prober and disk sampler as every
  # measured window below, and nothing else: the bench's own observers cost CPU on a small
  # machine, and a baseline without them would count that cost against whatever is measured.
  local base_tps b0
  start_writers "$cell/baseline"
  sleep 1
  start_observers "$cell/baseline"
  b0="$(now)"; sleep "$TPS_S"
  base_tps="$(window_tps "$cell/baseline" "$b0" "$(now)")"
  stop_observers
  stop_writers
  say "baseline tps: $base_tps (pgbench -c $CLIENTS -j $CLIENTS with the prober and the disk sampler, $TPS_S s)"

  # The raw copy of the data directory (the physical limit for a snapshot), pgbench writing.
  local cp_flags=(-a) cps=() t i
  [ "$method" = reflink ] && cp_flags=(-a --reflink=always)
  start_writers "$cell/cp-writers"
  for i in $(seq "$RUNS"); do
    t="$(now)"; as_pg cp "${cp_flags[@]}" "$data" "$fsroot/cp-copy"; cps+=("$(elapsed "$t")")
    rm -rf "$fsroot/cp-copy"
  done
  stop_writers
  say "cp ${cp_flags[*]}: ${cps[*]} s"

  # Ours, through real upgrades: snapshot, dry run on a clone, apply, a failed health check, the
  # automatic rollback; pgbench writes from begin to the terminal state.
  local runs_json=() id r t0 t1 t_seen t_ap snap_dir used_method
  for i in $(seq "$RUNS"); do
    r="$cell/ours-$i"; mkdir -p "$r"
    start_writers "$r/writers"
    sleep 1  # let pgbench reach its pace before begin
    "$PROBE" disk --out "$r/disk.json" --tree "$SB" "$data" "$SB/snapshots" "$SB/work" &
    local disk_pid=$!; BG_PIDS+=("$disk_pid")
    start_prober "$r/probe.json"
    t0="$(now)"
    id="$(sql "SELECT safe_upgrade.begin('su_rollback_fixture', '2.0', '{\"require_approval\": true}')")"
    wait_state "$id" 0.05 awaiting_approval
    t_seen="$(now)"
    sql "INSERT INTO poison VALUES (1000)" >/dev/null
    sql "SELECT safe_upgrade.approve($id)" >/dev/null
    t_ap="$(now)"
    wait_state "$id" 0.1 rolled_back
    t1="$(now)"
    stop_prober_when_up "$r/probe.json" 0
    kill -TERM "$disk_pid"; wait "$disk_pid" || true
    stop_writers

    snap_dir="$(ls -d "$SB"/snapshots/snap-*/ 2>/dev/null | sort -V | tail -1)"
    used_method="$(jq -r '.method // "basebackup"' "${snap_dir}snapshot.json" 2>/dev/null || echo basebackup)"
    local s0 s1 w_tps
    s0="$(sql "SELECT extract(epoch FROM min(at)) FROM safe_upgrade.events WHERE upgrade_id = $id AND phase = 'snapshot'")"
    s1="$(event_epoch "$id" 'snapshot % verified%' snapshot)"
    [ -n "$s1" ] || s1="$(sql "SELECT extract(epoch FROM max(at)) FROM safe_upgrade.events WHERE upgrade_id = $id AND phase = 'snapshot'")"
    w_tps="$(window_tps "$r/writers" "$(num "$s0")" "$(num "$s1")")"
    runs_json+=("$(jq -n \
      --argjson id "$id" --arg method "$used_method" \
      --arg path "$(sql "SELECT coalesce(report #>> '{rollback,path}', '') FROM safe_upgrade.upgrades WHERE id = $id")" \
      --slurpfile probe "$r/probe.json" --slurpfile disk "$r/disk.json" \
      --argjson t0 "$t0" --argjson t1 "$t1" --argjson t_ap "$t_ap" --argjson t_seen "$t_seen" \
      --argjson s0 "$(num "$s0")" --argjson s1 "$(num "$s1")" --argjson w_tps "$w_tps" --argjson base "$(num "$base_tps")" \
      --argjson clone_s "$(span "$(event_epoch "$id" 'copying snapshot % into %' clone)" "$(event_epoch "$id" 'clone started on port %')")" \
      --argjson rto_ev "$(span "$(event_epoch "$id" 'state verifying -> rolling_back')" "$(event_epoch "$id" 'the server reached the restore point and was promoted%')")" \
      --argjson cluster "$cluster_bytes" '
      ($probe[0]) as $p | ($disk[0]) as $d |
      ($t_ap - $t_seen) as $ap |
      {upgrade_id: $id, method: $method, rollback_path: $path,
       downtime_s: $p.longest_outage_s, outages: $p.outage_count, outage_list: $p.outages,
       unfinished_outage: $p.unfinished_outage, max_accepted_write_latency_s: $p.max_accepted_write_latency_s,
       upgrade_s: ($t1 - $t0), awaiting_approval_s: $ap,
       upgrade_excl_approval_s: ($t1 - $t0 - $ap),
       snapshot_s: (if $s0 == null or $s1 == null then null else ($s1 - $s0) end),
       snapshot_tps: $w_tps, tps_ratio: (if $w_tps == null or $base == null then null else ($w_tps / $base) end),
       dry_run_clone_events_s: $clone_s, rollback_events_s: $rto_ev,
       peak_extra_bytes: $d.peak_extra_bytes, tree_peak_extra_bytes: $d.tree.peak_extra_bytes,
       wal_bytes: $p.wal_bytes, disk_limit_bytes: (0.05 * $cluster + $p.wal_bytes),
       disk_samples: $d.samples, disk_paths: $d.paths}')")
    say "ours run $i (upgrade $id, $used_method, $(jq -r .rollback_path <<<"${runs_json[-1]}")): $(jq -r '
      def r3: if . == null then null else . * 1000 | round / 1000 end;
      def mb: if . == null then null else . / 1048576 | round end;
      "downtime \(.downtime_s | r3) s (\(.outages) outage(s)), upgrade \(.upgrade_s | r3) s (approval \(.awaiting_approval_s | r3) s), snapshot \(.snapshot_s | r3) s at \(.tps_ratio | r3) x tps, peak extra \(.peak_extra_bytes | mb) MB, WAL \(.wal_bytes | mb) MB"' <<<"${runs_json[-1]}")"
    sql "DELETE FROM poison" >/dev/null
    rm -rf "$data".failed-*
  done

  # pgBackRest, with its own archiving: full backups with pgbench writing, then delta restores to
  # a named restore point created after the newest backup, pgbench writing until the stop.
  local pbr_cmd
  pbr_cmd="pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
  sql "ALTER SYSTEM SET archive_command = \$q\$$pbr_cmd\$q\$" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  pgbr check >/dev/null
  local pb=() pb_tps=() delta_json=() rp seg ta tb
  for i in $(seq "$RUNS"); do
    start_writers "$cell/pgbr-backup-$i"
    sleep 1
    start_observers "$cell/pgbr-backup-$i"
    ta="$(now)"; pgbr backup --type=full >/dev/null; tb="$(now)"
    stop_observers
    stop_writers
    pb+=("$(span "$ta" "$tb")")
    pb_tps+=("$(window_tps "$cell/pgbr-backup-$i" "$ta" "$tb")")
  done
  say "pgbackrest backup --type=full: ${pb[*]} s, tps ${pb_tps[*]}"
  for i in $(seq "$RUNS"); do
    r="$cell/pgbr-delta-$i"; mkdir -p "$r"
    start_writers "$r/writers"
    start_prober "$r/probe.json"
    rp="bench_delta_${i}_$STAMP"
    seg="$(sql "SELECT pg_walfile_name(pg_create_restore_point('$rp'))")"
    sql "SELECT pg_switch_wal()" >/dev/null
    until [ "$(sql "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver")" = t ]; do sleep 0.1; done
    t="$(now)"
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    pgbr restore --delta --type=name --target="$rp" --target-action=promote >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$data" -l "$SB/postgres.log" -w -t 600 start >/dev/null
    stop_prober_when_up "$r/probe.json" "$t"
    stop_writers
    delta_json+=("$(jq --argjson t "$t" '{downtime_s: .longest_outage_s, outages: .outage_count, outage_list: .outages,
      unfinished_outage: .unfinished_outage, stop_to_accepted_write_s: ((.outages | map(select(.end >= $t)) | .[0].end // null) as $e | if $e == null then null else $e - $t end)}' "$r/probe.json")")
    say "pgbackrest stop + restore --delta + start, run $i: downtime $(jq -r '.downtime_s // null | if . == null then null else . * 1000 | round / 1000 end' <<<"${delta_json[-1]}") s seen by the client"
  done

  local pb_json; pb_json="$(printf '%s\n' "${pb[@]}" | jq -s .)"
  local pbt_json; pbt_json="$(printf '%s\n' "${pb_tps[@]}" | jq -s .)"
  jq -n --arg method "$method" --arg method_config "$method_config" --argjson target_mb "$mb" \
    --argjson size_mb "$size_mb" --argjson cluster "$cluster_bytes" --arg fs "$fs_type" --arg fsroot "$fsroot" \
    --argjson scale "$scale" --argjson rows "$rnd_rows" --argjson base "$(num "$base_tps")" \
    --argjson runs "$(printf '%s\n' "${runs_json[@]}" | jq -s .)" \
    --argjson cp "$(printf '%s\n' "${cps[@]}" | jq -s .)" --arg cp_cmd "cp ${cp_flags[*]}" \
    --argjson pb "$pb_json" --argjson pbt "$pbt_json" \
    --argjson delta "$(printf '%s\n' "${delta_json[@]}" | jq -s .)" '
    def median: map(select(. != null)) | sort |
      if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def med(f): [.[] | f] | median;
    {method: $method, snapshot_method_setting: $method_config, methods_used: ($runs | map(.method) | unique),
     target_mb: $target_mb, size_mb: $size_mb, cluster_bytes: $cluster, filesystem: $fs, filesystem_root: $fsroot,
     pgbench_scale: $scale, random_rows: $rows, baseline_tps: $base,
     ours: {runs: $runs,
            median: {downtime_s: ($runs | med(.downtime_s)), worst_downtime_s: ($runs | map(.downtime_s) | max),
                     upgrade_s: ($runs | med(.upgrade_s)), upgrade_excl_approval_s: ($runs | med(.upgrade_excl_approval_s)),
                     snapshot_s: ($runs | med(.snapshot_s)), tps_ratio: ($runs | med(.tps_ratio)),
                     peak_extra_bytes: ($runs | med(.peak_extra_bytes)), wal_bytes: ($runs | med(.wal_bytes)),
                     disk_limit_bytes: ($runs | med(.disk_limit_bytes)),
                     peak_extra_vs_limit: ($runs | med(if .disk_limit_bytes > 0 then .peak_extra_bytes / .disk_limit_bytes else null end))}},
     pgbackrest: {full_backup_s: $pb, full_backup_median_s: ($pb | median),
                  tps_during_backup: $pbt, tps_ratio_during_backup: (($pbt | median) as $m | if $m == null or $base == null then null else $m / $base end),
                  delta_restore: $delta, delta_downtime_median_s: ($delta | med(.downtime_s))},
     raw_copy: {command: $cp_cmd, s: $cp, median_s: ($cp | median)}}
    | .ratios = {downtime_vs_pgbackrest_delta: (if .pgbackrest.delta_downtime_median_s > 0 and .ours.median.downtime_s != null then .ours.median.downtime_s / .pgbackrest.delta_downtime_median_s else null end),
                 snapshot_vs_pgbackrest_full: (if .pgbackrest.full_backup_median_s > 0 and .ours.median.snapshot_s != null then .ours.median.snapshot_s / .pgbackrest.full_backup_median_s else null end),
                 snapshot_vs_raw_copy: (if .raw_copy.median_s > 0 and .ours.median.snapshot_s != null then .ours.median.snapshot_s / .raw_copy.median_s else null end)}' \
    >"$W/cells/$method-$mb.json"

  jq -r 'def r3: if . == null then null else . * 1000 | round / 1000 end;
    def mb: if . == null then null else . / 1048576 | round end;
    "\n\(.method) at \(.target_mb) MB (cluster \(.size_mb) MB on \(.filesystem)), medians of \(.ours.runs | length) runs; snapshots: \(.methods_used | join(","))",
    "  rollback downtime seen by a client   ours \(.ours.median.downtime_s | r3) s (worst \(.ours.median.worst_downtime_s | r3))   pgBackRest delta \(.pgbackrest.delta_downtime_median_s | r3) s   ratio \(.ratios.downtime_vs_pgbackrest_delta | r3)",
    "  whole upgrade (begin to terminal)    \(.ours.median.upgrade_s | r3) s, \(.ours.median.upgrade_excl_approval_s | r3) s without the approval hand-off",
    "  peak extra disk                      \(.ours.median.peak_extra_bytes | mb) MB (the sandbox tree: \(.ours.runs | map(.tree_peak_extra_bytes) | max | mb) MB); limit 5% of the cluster + WAL written \(.ours.median.disk_limit_bytes | mb) MB",
    "  snapshot                             ours \(.ours.median.snapshot_s | r3) s   pgBackRest full \(.pgbackrest.full_backup_median_s | r3) s   \(.raw_copy.command) \(.raw_copy.median_s | r3) s",
    "  tps during snapshot / baseline       \(.ours.median.tps_ratio | r3) (baseline \(.baseline_tps | r3)); during pgBackRest full backup \(.pgbackrest.tps_ratio_during_backup | r3)\n"' \
    "$W/cells/$method-$mb.json" >&2

  "$CLI" sandbox down --dir "$SB" >/dev/null
  rm -rf "$SB/snapshots" "$SB/wal_archive" "$SB/work" "$cell/pgbr-repo" "$data" "$data".*  # the next cell needs the disk
  if [ "$method" = reflink ]; then unmount_fs "$fsroot"; rm -f "$W/xfs-$mb.img"; fi
}

IDLE_JSON=""
SKIPPED=()
for m in $METHODS; do
  case "$m" in
    basebackup)
      for s in $SIZES; do
        if [ "$(free_mb "$W")" -lt "$(basebackup_need_mb "$s")" ]; then
          why="not enough disk for a $s MB cell: $(free_mb "$W") MB free under $W, about $(basebackup_need_mb "$s") MB needed"
          say "basebackup at $s MB skipped: $why"
          SKIPPED+=("$(jq -n --arg m basebackup --argjson s "$s" --arg why "$why" '{method: $m, size_mb: $s, reason: $why}')")
          continue
        fi
        mkdir -p "$W/basebackup-$s"; bench_cell basebackup "$s" "$W/basebackup-$s"
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
    *) die "unknown method in BENCH_METHODS: $m (basebackup, reflink)" ;;
  esac
done
for m in basebackup reflink; do
  [[ " $METHODS " == *" $m "* ]] || SKIPPED+=("$(jq -n --arg m "$m" '{method: $m, reason: "not in BENCH_METHODS"}')")
done

# --- targets (issue 3/7: speed that holds on a busy server) ------------------------------------
CELLS="$(cat "$W"/cells/*.json 2>/dev/null | jq -s 'sort_by(.method, .target_mb)')"
TARGETS=() RESULT_LINES=()
target() {  # name value limit met(true|false|null) note
  TARGETS+=("$(jq -n --arg n "$1" --argjson v "$(num "$2")" --argjson l "$3" --argjson m "$4" --arg note "$5" \
    '{name: $n, value: $v, limit: $l, met: $m, note: $note}')")
  local verdict=MISSED; [ "$4" = true ] && verdict=MET; [ "$4" = null ] && verdict="NOT EVALUATED"
  RESULT_LINES+=("$(printf '%-14s %-76s value %-9s limit %s%s' "$verdict" "$1" "$2" "$3" "${5:+  ($5)}")")
}
verdict() {  # value op limit -> true|false|null
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { if (v == "null" || v == "") print "null"; else if ((op == "le" && v + 0 <= l + 0) || (op == "ge" && v + 0 >= l + 0)) print "true"; else print "false" }'
}
cell() { jq -r --arg m "$1" --argjson s "$2" ".[] | select(.method == \$m and .target_mb == \$s) | (try ($3) catch null) | if . == null then \"null\" elif type == \"number\" then (. * 1000 | round / 1000) else . end" <<<"$CELLS"; }
sizes_run() { jq -r --arg m "$1" '[.[] | select(.method == $m) | .target_mb] | sort | .[]' <<<"$CELLS"; }
skip_reason() { jq -r --arg m "$1" '.[] | select(.method == $m) | .reason' <<<"$(printf '%s\n' "${SKIPPED[@]}" | jq -s .)" | head -1; }
# why a cell of method m cannot count for m (the agent took its snapshots another way), or nothing
not_this_method() {
  local used; used="$(cell "$1" "$2" '.methods_used | join(",")')"
  case "$(cell "$1" "$2" .snapshot_method_setting)" in
    set) [ "$used" = "$1" ] || echo "the agent took $used snapshots (snapshot.json method), though snapshot_method = \"$1\" was set" ;;
    *) [ "$used" = "$1" ] || echo "the agent took $used snapshots (snapshot.json method): it rejected snapshot_method = \"$1\"" ;;
  esac
}
size_note() {  # size stated-sizes...
  local s="$1"; shift
  for x in "$@"; do [ "$s" = "$x" ] && return 0; done
  echo "measured at $s MB, the target is stated at $* MB"
}
join_notes() {  # the non-empty arguments, joined with "; "
  local out="" n
  for n in "$@"; do [ -n "$n" ] && out="${out:+$out; }$n"; done
  echo "$out"
}

for m in basebackup reflink; do
  mapfile -t ms < <(sizes_run "$m")
  if [ "${#ms[@]}" = 0 ]; then
    why="$(skip_reason "$m")"; why="${why:-not run}"
    target "rollback downtime seen by a client, pgbench writing ($m)" null 1.0 null "$why"
    target "rollback downtime / pgBackRest delta restore's, both seen by a client ($m, 4096 MB)" null 0.2 null "$why"
    if [ "$m" = reflink ]; then
      target "whole upgrade at 16384 MB / at 1024 MB (reflink)" null 1.5 null "$why"
      target "peak extra disk / (5% of the cluster + WAL written meanwhile) (reflink)" null 1.0 null "$why"
      target "tps during the snapshot / baseline (reflink)" null 0.9 null "$why"
    else
      target "snapshot / pgBackRest full backup (basebackup)" null 1.0 null "$why"
    fi
    continue
  fi
  for s in "${ms[@]}"; do
    wrong="$(not_this_method "$m" "$s")"
    v="$(cell "$m" "$s" .ours.median.downtime_s)"
    met="$(verdict "$v" le 1.0)"; [ -n "$wrong" ] && met=null
    target "rollback downtime seen by a client, pgbench writing ($m, $s MB) [s]" "$v" 1.0 "$met" \
      "$(join_notes "$wrong" "$(size_note "$s" 1024 4096)" "median of $RUNS, worst $(cell "$m" "$s" .ours.median.worst_downtime_s) s")"
  done
  # the downtime ratio at 4096 MB, else the largest size run below it, else the largest
  s4=""; for s in "${ms[@]}"; do [ "$s" -le 4096 ] && s4="$s"; done; [ -n "$s4" ] || s4="${ms[-1]}"
  wrong="$(not_this_method "$m" "$s4")"
  v="$(cell "$m" "$s4" .ratios.downtime_vs_pgbackrest_delta)"
  met="$(verdict "$v" le 0.2)"; [ -n "$wrong" ] && met=null
  target "rollback downtime / pgBackRest delta restore's, both seen by a client ($m, $s4 MB)" "$v" 0.2 "$met" \
    "$(join_notes "$wrong" "$(size_note "$s4" 4096)" "$(cell "$m" "$s4" .ours.median.downtime_s) s against $(cell "$m" "$s4" .pgbackrest.delta_downtime_median_s) s")"
  if [ "$m" = reflink ]; then
    small="${ms[0]}"; large="${ms[-1]}"
    if [ "$small" = "$large" ]; then
      target "whole upgrade at 16384 MB / at 1024 MB (reflink)" null 1.5 null "needs two sizes; ran only $small MB"
    else
      wrong="$(join_notes "$(not_this_method reflink "$small")" "$(not_this_method reflink "$large")")"
      v="$(awk -v a="$(cell reflink "$large" .ours.median.upgrade_excl_approval_s)" -v b="$(cell reflink "$small" .ours.median.upgrade_excl_approval_s)" \
        'BEGIN { if (a == "null" || b == "null" || b + 0 == 0) print "null"; else printf "%.3f", a / b }')"
      met="$(verdict "$v" le 1.5)"; [ -n "$wrong" ] && met=null
      n=""; [ "$large/$small" = 16384/1024 ] || n="sizes $large/$small MB, the target is stated for 16384/1024 MB"
      target "whole upgrade at $large MB / at $small MB (reflink, without the approval hand-off)" "$v" 1.5 "$met" "$(join_notes "$wrong" "$n")"
    fi
    for s in "${ms[@]}"; do
      wrong="$(not_this_method reflink "$s")"
      v="$(cell reflink "$s" .ours.median.peak_extra_vs_limit)"
      met="$(verdict "$v" le 1.0)"; [ -n "$wrong" ] && met=null
      target "peak extra disk / (5% of the cluster + WAL written meanwhile) (reflink, $s MB)" "$v" 1.0 "$met" \
        "$(join_notes "$wrong" "$(cell reflink "$s" '.ours.median.peak_extra_bytes / 1048576 | round') MB against $(cell reflink "$s" '.ours.median.disk_limit_bytes / 1048576 | round') MB")"
      v="$(cell reflink "$s" .ours.median.tps_ratio)"
      met="$(verdict "$v" ge 0.9)"; [ -n "$wrong" ] && met=null
      target "tps during the snapshot / baseline (reflink, $s MB; at least)" "$v" 0.9 "$met" "$wrong"
    done
  else
    for s in "${ms[@]}"; do
      wrong="$(not_this_method basebackup "$s")"
      v="$(cell basebackup "$s" .ratios.snapshot_vs_pgbackrest_full)"
      met="$(verdict "$v" le 1.0)"; [ -n "$wrong" ] && met=null
      target "snapshot / pgBackRest full backup, pgbench writing (basebackup, $s MB)" "$v" 1.0 "$met" "$wrong"
    done
  fi
done
if [ -n "$IDLE_JSON" ]; then
  v="$(jq -r .cpu_fraction_of_core <<<"$IDLE_JSON")"
  target "idle scheduler CPU (fraction of one core)" "$v" 0.01 "$(verdict "$v" le 0.01)" "over $IDLE_S s"
  v="$(jq -r .wakeups_per_s <<<"$IDLE_JSON")"
  target "idle scheduler wakeups per second" "$v" 1.0 "$(verdict "$v" le 1.0)" "voluntary context switches"
fi

# --- charts: one per figure against size -------------------------------------------------------
CHARTS=()
if [ "$CHART" = 1 ] && [ "$(jq length <<<"$CELLS")" -gt 0 ]; then
  for m in basebackup reflink; do
    jq -r --arg m "$m" '.[] | select(.method == $m) | [.size_mb, .ours.median.downtime_s, .pgbackrest.delta_downtime_median_s,
      .ours.median.upgrade_excl_approval_s, (.ours.median.peak_extra_bytes // null | if . == null then null else . / 1048576 end),
      (.ours.median.disk_limit_bytes // null | if . == null then null else . / 1048576 end),
      .ours.median.tps_ratio, .pgbackrest.tps_ratio_during_backup, .ours.median.snapshot_s,
      .pgbackrest.full_backup_median_s, .raw_copy.median_s] | map(if . == null then "null" else tostring end) | join(" ")' \
      <<<"$CELLS" >"$W/chart-$m.dat"
    [ -s "$W/chart-$m.dat" ] || rm -f "$W/chart-$m.dat"
  done
  chart() {  # name title ylabel series... (series: method:column:title)
    local name="$1" title="$2" ylabel="$3" plots=() m col label; shift 3
    for spec in "$@"; do
      m="${spec%%:*}"; col="${spec#*:}"; col="${col%%:*}"; label="${spec#*:*:}"
      [ -f "$W/chart-$m.dat" ] && plots+=("\"$W/chart-$m.dat\" using 1:$col with linespoints lw 2 title \"$label\"")
    done
    [ "${#plots[@]}" -gt 0 ] || return 0
    local IFS=,
    gnuplot <<EOF
set terminal pngcairo size 900,560 noenhanced
set output "$RESULTS_DIR/$STAMP-$name.png"
set title "$title\n($STAMP, pgbench -c $CLIENTS -j $CLIENTS writing throughout)"
set xlabel "cluster size (MB)"
set ylabel "$ylabel"
set datafile missing "null"
set key below
set grid
set yrange [0:*]
set xrange [0:*]
plot ${plots[*]}
EOF
    CHARTS+=("$STAMP-$name.png")
  }
  chart downtime "Rollback downtime seen by a client (refused write to accepted write)" "seconds" \
    "basebackup:2:pg_safe_upgrade (basebackup)" "reflink:2:pg_safe_upgrade (reflink)" \
    "basebackup:3:pgBackRest stop + delta restore + start (normal fs)" "reflink:3:pgBackRest stop + delta restore + start (xfs)"
  chart upgrade "Whole upgrade, begin to terminal state (without the approval hand-off)" "seconds" \
    "basebackup:4:pg_safe_upgrade (basebackup)" "reflink:4:pg_safe_upgrade (reflink)"
  chart disk "Peak extra disk during the upgrade" "MB" \
    "basebackup:5:pg_safe_upgrade (basebackup)" "reflink:5:pg_safe_upgrade (reflink)" \
    "basebackup:6:5% of the cluster + WAL written (basebackup runs)" "reflink:6:5% of the cluster + WAL written (reflink runs)"
  chart tps "Production throughput during the snapshot / baseline" "tps ratio" \
    "basebackup:7:pg_safe_upgrade snapshot (basebackup)" "reflink:7:pg_safe_upgrade snapshot (reflink)" \
    "basebackup:8:pgBackRest full backup (normal fs)" "reflink:8:pgBackRest full backup (xfs)"
  chart snapshot "Snapshot time, pgbench writing" "seconds" \
    "basebackup:9:pg_safe_upgrade (basebackup)" "reflink:9:pg_safe_upgrade (reflink)" \
    "basebackup:10:pgBackRest full backup (normal fs)" "reflink:10:pgBackRest full backup (xfs)" \
    "basebackup:11:cp -a (normal fs)" "reflink:11:cp -a --reflink=always (xfs)"
  say "charts: ${CHARTS[*]} in $RESULTS_DIR"
fi

# --- results ------------------------------------------------------------------------------------
OUT="$RESULTS_DIR/$STAMP.json"
jq -n --arg stamp "$STAMP" --argjson cores "$(nproc)" \
  --arg pg "$("$PGBIN/postgres" --version | awk '{ print $3 }')" --arg pgbr "$(pgbackrest version | awk '{ print $2 }')" \
  --arg kernel "$(uname -r)" --arg methods "$METHODS" --arg sizes "$SIZES" --arg rsizes "$REFLINK_SIZES" \
  --argjson runs "$RUNS" --argjson clients "$CLIENTS" --argjson idle_s "$IDLE_S" --argjson tps_s "$TPS_S" --arg rate "$MAX_RATE" --arg checkpoint "$CHECKPOINT" \
  --argjson cells "$CELLS" --argjson skipped "$(printf '%s\n' "${SKIPPED[@]}" | jq -s .)" \
  --argjson idle "${IDLE_JSON:-null}" --argjson targets "$(printf '%s\n' "${TARGETS[@]}" | jq -s .)" \
  --argjson charts "$(printf '%s\n' "${CHARTS[@]}" | jq -R . | jq -s 'map(select(. != ""))')" '
  {timestamp: $stamp, host: {cores: $cores, postgres: $pg, pgbackrest: $pgbr, kernel: $kernel},
   config: {methods: ($methods | split(" ") | map(select(. != ""))), sizes_mb: ($sizes | split(" ") | map(select(. != "") | tonumber)),
            reflink_sizes_mb: ($rsizes | split(" ") | map(select(. != "") | tonumber)), runs: $runs,
            backup_checkpoint: $checkpoint,
            pgbench: "-n -c \($clients) -j \($clients), unthrottled, restarted whenever the server drops it",
            baseline_tps_s: $tps_s, idle_s: $idle_s, backup_max_rate: $rate,
            downtime: "su-bench-probe: SELECT txid_current() every 5 ms, reconnecting; longest span from the start of a refused write to the end of the next accepted one",
            upgrade: "safe_upgrade.begin() call to the terminal state seen by polling every 0.1 s; upgrade_excl_approval_s subtracts the bench'"'"'s approval hand-off (awaiting_approval event to approve())",
            disk: "used bytes (statvfs) of the filesystems holding the data directory, snapshots and work directories every 100 ms; extra = peak - value at begin; the limit is 5% of sum(pg_database_size) + the WAL written meanwhile (from the LSNs of the prober'"'"'s writes)",
            snapshot: "the agent'"'"'s snapshot job: first to last snapshot-phase event (to snapshot ... verified)",
            pgbackrest: "process-max=2 compress-type=lz4 start-fast=y, local repository; archive_command is pgBackRest'"'"'s only during its part, the agent'"'"'s only during ours"},
   skipped: $skipped, cells: $cells, idle_worker: $idle, targets: $targets, charts: $charts}' >"$OUT"

echo
echo "targets (issue 3/7, speed that holds on a busy server):"
printf '  %s\n' "${RESULT_LINES[@]}"
echo
echo "results: $OUT"
