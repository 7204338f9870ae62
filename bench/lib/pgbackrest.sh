# bench/run.sh: pgBackRest in a cell: full backups and delta restores, pgbench writing.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

cell_pgbackrest() {
  # pgBackRest, with its own archiving: full backups with pgbench writing, then delta restores to
  # a named restore point created after the newest backup, pgbench writing until the stop.
  local pbr_cmd
  pbr_cmd="pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
  sql "ALTER SYSTEM SET archive_command = \$q\$$pbr_cmd\$q\$" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  pgbr check >/dev/null
  local i r t rp seg ta tb
  pb=() pb_tps=() delta_json=()
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
}

