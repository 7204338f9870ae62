# bench/run.sh: one cell (a snapshot method, or the pgBackRest backend, at a size): the sandbox, its
# data, the idle scheduler, the baseline and the raw copy; ours, pgBackRest and the cell report are
# in their own files.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

# --- one cell: a method at a size --------------------------------------------------------------
# bench_cell runs the parts of a cell in order. The parts share its locals (bash scopes them
# dynamically): method, mb, cell, fsroot, data, method_config, and what one part measures for
# the next or for the cell report.
bench_cell() {
  local method="$1" mb="$2" cell="$W/$1-$2" fsroot="$3"
  mkdir -p "$cell"; chown "$PG_OS_USER" "$cell"
  SB="$fsroot/sb"
  SANDBOXES+=("$SB")
  # pgbackrest is not a snapshot_method but the agent's backend ([backend] kind = "pgbackrest",
  # stanza "sandbox", repository $SB/pgbackrest/repo), which the sandbox sets up itself.
  local backend=local; [ "$method" = pgbackrest ] && backend=pgbackrest
  say "== $method, $mb MB: creating the sandbox in $SB (backend $backend)"
  "$CLI" sandbox up --dir "$SB" --backend "$backend" >/dev/null
  set -a; . "$SB/env"; set +a
  local data="$SB/data" method_config="set"
  [ "$backend" = pgbackrest ] && method_config="backend pgbackrest"

  # The agent: the method (local backend), no retention during the runs (a deletion in the middle
  # of one would hide its peak disk), the optional throttle.
  [ "$backend" = local ] && set_agent_key snapshot_method "\"$method\""
  set_agent_key snapshot_retention "$(( RUNS + 1 ))"
  [ -n "$MAX_RATE" ] && set_agent_key backup_max_rate "\"$MAX_RATE\""
  [ "$CHECKPOINT" != fast ] && set_agent_key backup_checkpoint "\"$CHECKPOINT\""
  if ! restart_agent; then
    [ "$backend" = local ] || die "the agent did not start with the pgbackrest backend; see $SB/agent.stderr and $SB/agent.log"
    say "the agent did not start with snapshot_method = \"$method\"; running without the key"
    method_config="rejected by the agent"
    sed -i '/^snapshot_method = /d' "$SB/agent.toml"
    restart_agent || die "the agent did not start; see $SB/agent.stderr"
  fi

  local scale rnd_rows cluster_bytes size_mb fs_type base_tps cp_flags cps runs_json pb pb_tps delta_json
  cell_pgbackrest_stanza
  cell_load
  cell_idle
  cell_baseline
  cell_raw_copy
  CELL_FAILED=""
  cell_ours
  if [ -z "$CELL_FAILED" ]; then
    cell_pgbackrest
    cell_report
  else
    SKIPPED+=("$(jq -n --arg m "$method" --argjson s "$mb" --arg why "the cell failed: $CELL_FAILED" '{method: $m, size_mb: $s, reason: $why}')")
  fi
  "$CLI" sandbox down --dir "$SB" >/dev/null
  rm -rf "$SB/snapshots" "$SB/wal_archive" "$SB/work" "$SB/pgbackrest" "$cell/pgbr-repo" "$data" "$data".*  # the next cell needs the disk
  if [ "$method" = reflink ]; then unmount_fs "$fsroot"; rm -f "$W/xfs-$mb.img"; fi
}

cell_pgbackrest_stanza() {
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
}

cell_load() {
  # Data: half pgbench tables (compressible), half random bytes (incompressible, stored inline).
  scale=$(( mb / 2 / 15 )); [ "$scale" -ge 1 ] || scale=1
  rnd_rows=$(( mb * 1000 / 2 ))
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
  cluster_bytes="$(sql "SELECT sum(pg_database_size(oid)) FROM pg_database")"
  size_mb=$(( cluster_bytes / 1048576 ))
  fs_type="$(stat -f -c %T "$data")"
  say "cluster size: $size_mb MB on $fs_type"
}

cell_idle() {
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
}

cell_baseline() {
  # Baseline: the same writers (per-transaction logs), client prober and disk sampler as every
  # measured window below, and nothing else: the bench's own observers cost CPU on a small
  # machine, and a baseline without them would count that cost against whatever is measured.
  local b0
  start_writers "$cell/baseline"
  sleep 1
  start_observers "$cell/baseline"
  b0="$(now)"; sleep "$TPS_S"
  base_tps="$(window_tps "$cell/baseline" "$b0" "$(now)")"
  stop_observers
  stop_writers
  say "baseline tps: $base_tps (pgbench -c $CLIENTS -j $CLIENTS with the prober and the disk sampler, $TPS_S s)"
}

cell_raw_copy() {
  # The raw copy of the data directory (the physical limit for a snapshot), pgbench writing.
  local t i
  cp_flags=(-a) cps=()
  [ "$method" = reflink ] && cp_flags=(-a --reflink=always)
  start_writers "$cell/cp-writers"
  for i in $(seq "$RUNS"); do
    # A live data directory loses files under the copy (pg_internal.init, temporary files): cp
    # reports them and exits 1. Only those vanished files are forgiven.
    t="$(now)"
    if ! as_pg cp "${cp_flags[@]}" "$data" "$fsroot/cp-copy" 2>"$cell/cp.err" &&
       grep -qv "No such file or directory" "$cell/cp.err"; then
      die "cp ${cp_flags[*]} of the data directory failed: $(head -c 500 "$cell/cp.err")"
    fi
    cps+=("$(elapsed "$t")")
    rm -rf "$fsroot/cp-copy"
  done
  stop_writers
  say "cp ${cp_flags[*]}: ${cps[*]} s"
}
