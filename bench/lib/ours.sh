# bench/run.sh: our measurement in a cell, through real upgrades that roll back.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

cell_ours() {
  # Ours, through real upgrades: snapshot, dry run on a clone, apply, a failed health check, the
  # automatic rollback; pgbench writes from begin to the terminal state.
  local i id r t0 t1 t_seen t_ap snap_dir snap_json used_method
  runs_json=()
  for i in $(seq "$RUNS"); do
    r="$cell/ours-$i"; mkdir -p "$r"
    start_writers "$r/writers"
    sleep 1  # let pgbench reach its pace before begin
    # shellcheck disable=SC2046
    "$PROBE" disk --out "$r/disk.json" --tree "$SB" $(disk_paths) &
    local disk_pid=$!; BG_PIDS+=("$disk_pid")
    start_prober "$r/probe.json"
    t0="$(now)"
    # An upgrade that cannot run (begin() refuses it, or it ends otherwise than rolled back) fails
    # the cell, not the bench: the other cells and the report still come out, and the JSON's
    # skipped says why.
    if ! id="$(sql "SELECT safe_upgrade.begin('su_rollback_fixture', '2.0', '{\"require_approval\": true}')" 2>"$r/begin.err")"; then
      CELL_FAILED="run $i: safe_upgrade.begin() failed: $(tr -s '\n' ' ' <"$r/begin.err")"
      abort_ours_run "$disk_pid"; return 0
    fi
    if ! wait_state "$id" 0.05 awaiting_approval; then
      CELL_FAILED="run $i: upgrade $id ended $(state_of "$id") before awaiting_approval: $(last_error_event "$id")"
      abort_ours_run "$disk_pid"; return 0
    fi
    t_seen="$(now)"
    sql "INSERT INTO poison VALUES (1000)" >/dev/null
    sql "SELECT safe_upgrade.approve($id)" >/dev/null
    t_ap="$(now)"
    if ! wait_state "$id" 0.1 rolled_back; then
      CELL_FAILED="run $i: upgrade $id ended $(state_of "$id"), expected rolled_back: $(last_error_event "$id")"
      abort_ours_run "$disk_pid"; return 0
    fi
    t1="$(now)"
    stop_prober_when_up "$r/probe.json" 0
    kill -TERM "$disk_pid"; wait "$disk_pid" || true
    stop_writers

    # The snapshot as the upgrade recorded it (status()'s snapshot: with the pgbackrest backend, its
    # pgbackrest {label, type, prior, backup_s, repo_delta_bytes}); snapshot.json when it is absent.
    snap_json="$(sql "SELECT coalesce(safe_upgrade.status($id) -> 'snapshot', 'null')")"
    snap_dir="$(ls -d "$SB"/snapshots/snap-*/ 2>/dev/null | sort -V | tail -1)"
    used_method="$(jq -r '.method // empty' <<<"$snap_json")"
    [ -n "$used_method" ] || used_method="$(jq -r '.method // "basebackup"' "${snap_dir}snapshot.json" 2>/dev/null || echo basebackup)"
    local s0 s1 w_tps
    s0="$(sql "SELECT extract(epoch FROM min(at)) FROM safe_upgrade.events WHERE upgrade_id = $id AND phase = 'snapshot'")"
    s1="$(event_epoch "$id" 'snapshot % verified%' snapshot)"
    [ -n "$s1" ] || s1="$(sql "SELECT extract(epoch FROM max(at)) FROM safe_upgrade.events WHERE upgrade_id = $id AND phase = 'snapshot'")"
    w_tps="$(window_tps "$r/writers" "$(num "$s0")" "$(num "$s1")")"
    runs_json+=("$(jq -n \
      --argjson id "$id" --arg method "$used_method" --argjson snap "$snap_json" \
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
       snapshot_type: ($snap.pgbackrest.type // null), snapshot_pgbackrest: ($snap.pgbackrest // null),
       snapshot_tps: $w_tps, tps_ratio: (if $w_tps == null or $base == null then null else ($w_tps / $base) end),
       dry_run_clone_events_s: $clone_s, rollback_events_s: $rto_ev,
       peak_extra_bytes: $d.peak_extra_bytes, tree_peak_extra_bytes: $d.tree.peak_extra_bytes,
       wal_bytes: $p.wal_bytes, disk_limit_bytes: (0.05 * $cluster + $p.wal_bytes),
       disk_samples: $d.samples, disk_paths: $d.paths}')")
    say "ours run $i (upgrade $id, $used_method$(jq -r '.snapshot_type // empty | " " + .' <<<"${runs_json[-1]}"), $(jq -r .rollback_path <<<"${runs_json[-1]}")): $(jq -r '
      def r3: if . == null then null else . * 1000 | round / 1000 end;
      def mb: if . == null then null else . / 1048576 | round end;
      "downtime \(.downtime_s | r3) s (\(.outages) outage(s)), upgrade \(.upgrade_s | r3) s (approval \(.awaiting_approval_s | r3) s), snapshot \(.snapshot_s | r3) s at \(.tps_ratio | r3) x tps, peak extra \(.peak_extra_bytes | mb) MB, WAL \(.wal_bytes | mb) MB"' <<<"${runs_json[-1]}")"
    sql "DELETE FROM poison" >/dev/null
    rm -rf "$data".failed-*
  done
}

abort_ours_run() {  # disk-sampler-pid: stops what watches a run that cannot go on
  kill -TERM "$PROBER_PID" 2>/dev/null; wait "$PROBER_PID" 2>/dev/null || true
  kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null || true
  stop_writers
  say "$method at $mb MB failed: $CELL_FAILED"
}
last_error_event() {  # upgrade id: the message of its newest error event
  sql "SELECT coalesce((SELECT message FROM safe_upgrade.events WHERE upgrade_id = $1 AND level = 'error'
                         ORDER BY at DESC, id DESC LIMIT 1), 'no error event')" 2>/dev/null || echo "the catalog is unreachable"
}
