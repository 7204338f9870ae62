# bench/run.sh: a streaming standby brought back after a rollback, against rebuilding it with
# pg_basebackup, pgbench writing to the primary throughout (BENCH_STANDBYS, basebackup method only).
# Sourced by bench/run.sh; it uses the settings and helpers defined there (and cell_load, set_agent_key,
# restart_agent, start_writers/stop_writers, wait_state, event_epoch from the other parts).
#
# One standbys cell per size: a sandbox made with `sandbox up --standbys 1` (primary + DIR/standby1,
# each with its agent), loaded like a cell (cell_load), then
#   ours: BENCH_RUNS real upgrades that fail verification and roll back automatically (as ours.sh);
#     the primary's agent has standby1's agent stop, pg_rewind (else re-clone) and restart it. The
#     figure: from the rollback's start (the event 'state verifying -> rolling_back', the one ours.sh
#     times the rollback from) until standby1's pg_stat_wal_receiver shows status 'streaming' on the
#     primary's new timeline, polled every 50 ms through DIR/standby1/env; beside it the resync's
#     own seconds (safe_upgrade.upgrade_standbys.detail -> result -> seconds, the standby agent's
#     job; detail -> seconds is the same job as the primary's agent saw it, polled every 200 ms), its
#     outcome, and when the primary's agent started it (the event 're-syncing N standby(s) ...');
#     the parts of the job (stop + pg_rewind, start, until streaming) from standby1's agent.log;
#   rebuild: BENCH_RUNS times, stop standby1, move its data directory aside, pg_basebackup -D <its
#     data> -X stream -c fast -R from the primary, copy its own postgresql.conf, postgresql.auto.conf,
#     pg_hba.conf and pg_ident.conf back (what the agent saves and restores), start it; from the stop
#     until it streams on the primary's timeline, polled the same way (the first 'streaming' sample
#     after pg_basebackup ended: the old standby streams until the stop).
# Writes $W/standbys/standbys-<mb>.json; report.sh puts them under the results' "standbys".

# --- the standby poller: one line "epoch status tli" every 50 ms, "down" when it does not answer ---
start_standby_poller() {  # out
  local out="$1"
  rm -f "$out.stop"
  (
    set +e
    # shellcheck disable=SC1091
    set -a; . "$SB/standby1/env"; set +a
    export PGCONNECT_TIMEOUT=2
    while [ ! -e "$out.stop" ]; do
      r="$(psql -X -qAt -F ' ' -c "SELECT coalesce((SELECT status || ' ' || received_tli FROM pg_stat_wal_receiver), 'none 0')" 2>/dev/null)"
      echo "$EPOCHREALTIME ${r:-down 0}"
      sleep 0.05
    done
  ) >"$out" &
  STANDBY_POLLER_PID=$!
  BG_PIDS+=("$STANDBY_POLLER_PID")
}
stop_standby_poller() {  # out
  touch "$1.stop"
  wait "$STANDBY_POLLER_PID" 2>/dev/null || true
}
# first epoch after $2 at which the poller saw the standby streaming on timeline >= $3 (empty if none)
first_streaming_after() {  # out epoch tli
  awk -v a="$2" -v tli="$3" '$1 > a && $2 == "streaming" && $3 + 0 >= tli + 0 { print $1; exit }' "$1"
}
# waits (120 s at most) until the poller has seen it; echoes the epoch
wait_streaming_after() {  # out epoch tli
  local deadline=$(( $(date +%s) + 120 )) e
  while :; do
    e="$(first_streaming_after "$@")"
    [ -n "$e" ] && { echo "$e"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
# epoch of the first line of standby1's agent log about upgrade $1's resync that contains $2 (empty
# if none): the standby agent's own times for the parts of its job
standby_log_epoch() {  # upgrade-id text
  local ts
  ts="$(grep -F "upgrade $1: [resync] $2" "$SB/standby1/agent.log" 2>/dev/null | head -1 | awk '{ print $1 " " $2 }')"
  if [ -n "$ts" ]; then date -d "$ts" +%s.%N 2>/dev/null || true; fi
}
primary_tli() {  # the timeline the primary writes on now (its current WAL file's)
  sql "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
}
standby_caught_up() {  # waits until standby1 has replayed what the primary had written (600 s at most)
  local lsn deadline=$(( $(date +%s) + 600 ))
  lsn="$(sql "SELECT pg_current_wal_lsn()")"
  until [ "$(sql "SELECT coalesce(bool_and(replay_lsn >= '$lsn'), false) FROM pg_stat_replication WHERE application_name = 'standby1'")" = t ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "standby1 has not replayed up to $lsn after 600 s"; return 1; }
    sleep 0.2
  done
}

standbys_need_mb() {  # the primary, the standby, BENCH_RUNS snapshots, clone, parked target, the
  # data directory the rollback sets aside, the standby's set-aside copy during a rebuild, the WAL
  echo $(( $1 * 11 / 10 * (7 + RUNS) + 2048 ))
}

bench_standbys() {  # runs a standbys cell at every size of BENCH_SIZES
  local s need why
  mkdir -p "$W/standbys"
  for s in $SIZES; do
    need="$(standbys_need_mb "$s")"
    if [ "$(free_mb "$W")" -lt "$need" ]; then
      why="not enough disk for a $s MB standbys cell: $(free_mb "$W") MB free under $W, about $need MB needed"
      say "standbys at $s MB skipped: $why"
      SKIPPED+=("$(jq -n --argjson s "$s" --arg why "$why" '{method: "standbys", size_mb: $s, reason: $why}')")
      continue
    fi
    standbys_cell "$s"
  done
}

standbys_cell() {
  local mb="$1" cell="$W/standbys-$1"
  mkdir -p "$cell"; chown "$PG_OS_USER" "$cell"
  SB="$cell/sb"
  SANDBOXES+=("$SB")
  say "== standbys, $mb MB: creating the sandbox in $SB with one streaming standby"
  if ! "$CLI" sandbox up --dir "$SB" --standbys 1 >"$cell/sandbox-up.out" 2>&1; then
    why="sandbox up --standbys 1 failed: $(tail -c 400 "$cell/sandbox-up.out" | tr -s '\n' ' ')"
    say "standbys at $mb MB skipped: $why"
    SKIPPED+=("$(jq -n --argjson s "$mb" --arg why "$why" '{method: "standbys", size_mb: $s, reason: $why}')")
    return 0
  fi
  set -a; . "$SB/env"; set +a
  local data="$SB/data" sdata="$SB/standby1/data"
  set_agent_key snapshot_method '"basebackup"'
  set_agent_key snapshot_retention "$(( RUNS + 1 ))"
  [ -n "$MAX_RATE" ] && set_agent_key backup_max_rate "\"$MAX_RATE\""
  [ "$CHECKPOINT" != fast ] && set_agent_key backup_checkpoint "\"$CHECKPOINT\""
  local t_agent; t_agent="$(now)"
  restart_agent || die "the agent did not start; see $SB/agent.stderr"

  local scale rnd_rows cluster_bytes size_mb fs_type why
  cell_load
  standby_caught_up || true
  # begin() trusts what the scheduler last heard from the agent: wait until it has heard from the
  # restarted one (a small cell gets here within a second of the restart)
  local deadline=$(( $(date +%s) + 60 ))
  until [ "$(sql "SELECT coalesce(bool_and(reachable AND checked_at > to_timestamp($t_agent)), false) FROM safe_upgrade.agent_status()" 2>/dev/null)" = t ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "the scheduler has not reached the restarted agent within 60 s"; break; }
    sleep 0.2
  done
  local ours_json=() rebuild_json=() failed=""
  standbys_ours || true
  [ -z "$failed" ] && { standbys_rebuild || true; }
  if [ -n "$failed" ]; then
    say "standbys at $mb MB: $failed"
    SKIPPED+=("$(jq -n --argjson s "$mb" --arg why "the cell failed: $failed" '{method: "standbys", size_mb: $s, reason: $why}')")
  fi

  jq -n --argjson target_mb "$mb" --argjson size_mb "$size_mb" --argjson cluster "$cluster_bytes" --arg fs "$fs_type" \
    --argjson scale "$scale" --argjson rows "$rnd_rows" --arg failed "$failed" \
    --argjson ours "$(printf '%s\n' "${ours_json[@]}" | jq -s .)" \
    --argjson rebuild "$(printf '%s\n' "${rebuild_json[@]}" | jq -s .)" '
    def median: map(select(. != null)) | sort |
      if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;
    {method: "basebackup", standbys: 1, target_mb: $target_mb, size_mb: $size_mb, cluster_bytes: $cluster,
     filesystem: $fs, pgbench_scale: $scale, random_rows: $rows,
     failed: (if $failed == "" then null else $failed end),
     ours: {runs: $ours,
            median: {rollback_start_to_streaming_s: ($ours | map(.rollback_start_to_streaming_s) | median),
                     resync_s: ($ours | map(.resync_s) | median),
                     resync_job_s: ($ours | map(.resync_job_s) | median),
                     rollback_start_to_resync_start_s: ($ours | map(.rollback_start_to_resync_start_s) | median),
                     resync_stop_and_rewind_s: ($ours | map(.resync_parts.stop_and_rewind_s) | median)},
            outcomes: ($ours | map(.outcome) | group_by(.) | map({key: .[0], value: length}) | from_entries)},
     rebuild: {command: "pg_ctl stop -m fast; mv data aside; pg_basebackup -D data -X stream -c fast -R; copy postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf back; pg_ctl start",
               runs: $rebuild,
               median: {stop_to_streaming_s: ($rebuild | map(.stop_to_streaming_s) | median),
                        basebackup_s: ($rebuild | map(.basebackup_s) | median)}}}
    | .ratios = {rebuild_vs_ours: ratio(.rebuild.median.stop_to_streaming_s; .ours.median.rollback_start_to_streaming_s),
                 rebuild_vs_resync: ratio(.rebuild.median.stop_to_streaming_s; .ours.median.resync_s)}' \
    >"$W/standbys/standbys-$mb.json"
  jq -r 'def r3: if . == null then null else . * 1000 | round / 1000 end;
    "\nstandbys at \(.target_mb) MB (cluster \(.size_mb) MB on \(.filesystem)), medians of \(.ours.runs | length) + \(.rebuild.runs | length) runs; outcomes \(.ours.outcomes | to_entries | map("\(.key) \(.value)") | join(", "))",
    "  rollback start to standby streaming  ours \(.ours.median.rollback_start_to_streaming_s | r3) s (runs \(.ours.runs | map(.rollback_start_to_streaming_s | r3) | join(", "))); resync itself \(.ours.median.resync_s | r3) s",
    "  pg_basebackup rebuild to streaming   \(.rebuild.median.stop_to_streaming_s | r3) s (runs \(.rebuild.runs | map(.stop_to_streaming_s | r3) | join(", ")))",
    "  ratio rebuild / ours                 \(.ratios.rebuild_vs_ours | r3) (rebuild / the resync alone \(.ratios.rebuild_vs_resync | r3))",
    (if .failed then "  failed: \(.failed)" else empty end), ""' "$W/standbys/standbys-$mb.json" >&2

  [ "${BENCH_KEEP:-0}" = 1 ] && return 0
  "$CLI" sandbox down --dir "$SB" >/dev/null 2>&1 || true
  rm -rf "$SB"  # the next cell needs the disk
}

standbys_ours() {
  local i r id t_ap rb0 tli t_stream resync res_start
  for i in $(seq "$RUNS"); do
    r="$cell/ours-$i"; mkdir -p "$r"
    start_writers "$r/writers"
    sleep 1
    if ! id="$(sql "SELECT safe_upgrade.begin('su_rollback_fixture', '2.0', '{\"require_approval\": true}')" 2>"$r/begin.err")"; then
      failed="ours run $i: safe_upgrade.begin() failed: $(tr -s '\n' ' ' <"$r/begin.err")"; stop_writers; return 1
    fi
    if ! wait_state "$id" 0.05 awaiting_approval; then
      failed="ours run $i: upgrade $id ended $(state_of "$id") before awaiting_approval: $(last_error_event "$id")"; stop_writers; return 1
    fi
    sql "INSERT INTO poison VALUES (1000)" >/dev/null
    start_standby_poller "$r/standby.poll"
    sql "SELECT safe_upgrade.approve($id)" >/dev/null
    t_ap="$(now)"
    if ! wait_state "$id" 0.1 rolled_back; then
      failed="ours run $i: upgrade $id ended $(state_of "$id"), expected rolled_back: $(last_error_event "$id")"
      stop_standby_poller "$r/standby.poll"; stop_writers; return 1
    fi
    tli="$(primary_tli)"
    rb0="$(event_epoch "$id" 'state verifying -> rolling_back')"
    [ -n "$rb0" ] || rb0="$(event_epoch "$id" '%-> rolling_back%')"
    t_stream=""
    if [ -n "$rb0" ]; then
      t_stream="$(wait_streaming_after "$r/standby.poll" "$rb0" "$tli")" || say "ours run $i: the poller never saw standby1 streaming on timeline $tli"
    fi
    stop_standby_poller "$r/standby.poll"
    stop_writers
    resync="$(sql "SELECT coalesce((SELECT jsonb_build_object('outcome', outcome, 'error', error, 'detail', detail)
                     FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = $id AND name = 'standby1'), 'null')")"
    sql "SELECT to_char(at, 'HH24:MI:SS.MS'), extract(epoch FROM at), phase, level, message FROM safe_upgrade.events
         WHERE upgrade_id = $id ORDER BY at, id" >"$r/events.txt" 2>&1 || true
    res_start="$(event_epoch "$id" 're-syncing % standby(s)%')"
    local l_stop l_done l_start l_stream
    l_stop="$(standby_log_epoch "$id" "stopping the standby")"
    l_done="$(standby_log_epoch "$id" "pg_rewind brought")"; [ -n "$l_done" ] || l_done="$(standby_log_epoch "$id" "re-clon")"
    l_start="$(standby_log_epoch "$id" "standby started")"
    l_stream="$(standby_log_epoch "$id" "the standby streams")"
    ours_json+=("$(jq -n --argjson id "$id" --argjson resync "$resync" --argjson tli "$tli" \
      --argjson parts "$(jq -n --argjson a "$(num "$l_stop")" --argjson b "$(num "$l_done")" --argjson c "$(num "$l_start")" --argjson d "$(num "$l_stream")" '
        def d(x; y): if x == null or y == null then null else y - x end;
        {stop_and_rewind_s: d($a; $b), start_s: d($b; $c), start_to_streaming_s: d($c; $d)}')" \
      --argjson rb0 "$(num "$rb0")" --argjson ts "$(num "$t_stream")" --argjson t_ap "$t_ap" --argjson rs "$(num "$res_start")" \
      --argjson polls "$(wc -l <"$r/standby.poll")" '
      {upgrade_id: $id, new_timeline: $tli, outcome: ($resync.outcome // null), error: ($resync.error // null),
       resync_method: ($resync.detail.result.method // null), resync_s: ($resync.detail.result.seconds // null),
       resync_job_s: ($resync.detail.seconds // null),
       resync_detail: ($resync.detail // null),
       resync_parts: $parts,
       rollback_start_epoch: $rb0, streaming_epoch: $ts,
       rollback_start_to_streaming_s: (if $rb0 == null or $ts == null then null else $ts - $rb0 end),
       approve_to_rollback_start_s: (if $rb0 == null then null else $rb0 - $t_ap end),
       rollback_start_to_resync_start_s: (if $rb0 == null or $rs == null then null else $rs - $rb0 end),
       standby_polls: $polls}')")
    say "standbys ours run $i (upgrade $id, $(jq -r '"\(.outcome) \(.resync_method)"' <<<"${ours_json[-1]}")): $(jq -r '
      def r3: if . == null then null else . * 1000 | round / 1000 end;
      "rollback start to standby streaming on timeline \(.new_timeline): \(.rollback_start_to_streaming_s | r3) s (resync started after \(.rollback_start_to_resync_start_s | r3) s, took \(.resync_s | r3) s: stop + \(.resync_method) \(.resync_parts.stop_and_rewind_s | r3) s, start \(.resync_parts.start_s | r3) s, to streaming \(.resync_parts.start_to_streaming_s | r3) s)"' <<<"${ours_json[-1]}")"
    sql "DELETE FROM poison" >/dev/null
    rm -rf "$data".failed-* "$sdata".resync-*
    standby_caught_up || true
  done
}

standbys_rebuild() {
  local i r t0 t_bb t_bb1 t_stream tli f conninfo
  conninfo="host=$PGHOST port=$PGPORT user=postgres application_name=standby1"
  for i in $(seq "$RUNS"); do
    r="$cell/rebuild-$i"; mkdir -p "$r/conf"
    start_writers "$r/writers"
    sleep 1
    tli="$(primary_tli)"
    start_standby_poller "$r/standby.poll"
    sleep 0.2
    t0="$(now)"
    for f in postgresql.conf postgresql.auto.conf pg_hba.conf pg_ident.conf; do
      [ -f "$sdata/$f" ] && cp -p "$sdata/$f" "$r/conf/$f"
    done
    as_pg "$PGBIN/pg_ctl" -D "$sdata" -m fast -w stop >/dev/null
    mv "$sdata" "$sdata.rebuild-aside"
    t_bb="$(now)"
    if ! as_pg "$PGBIN/pg_basebackup" -D "$sdata" -X stream -c fast -R -d "$conninfo" 2>"$r/pg_basebackup.err"; then
      failed="rebuild run $i: pg_basebackup failed: $(head -c 400 "$r/pg_basebackup.err")"
      stop_standby_poller "$r/standby.poll"; stop_writers; return 1
    fi
    t_bb1="$(now)"
    for f in "$r"/conf/*; do cp -p "$f" "$sdata/"; done
    chown "$PG_OS_USER" "$sdata"/*.conf
    as_pg "$PGBIN/pg_ctl" -D "$sdata" -l "$SB/standby1/postgres.log" -w -t 600 start >/dev/null
    # after the start: the old standby streamed until the stop, the new one cannot before it starts
    t_stream="$(wait_streaming_after "$r/standby.poll" "$t_bb1" "$tli")" || say "rebuild run $i: the poller never saw standby1 streaming on timeline $tli"
    stop_standby_poller "$r/standby.poll"
    stop_writers
    rm -rf "$sdata.rebuild-aside"
    rebuild_json+=("$(jq -n --argjson t0 "$t0" --argjson bb "$t_bb" --argjson bb1 "$t_bb1" --argjson ts "$(num "$t_stream")" --argjson tli "$tli" '
      {timeline: $tli, stop_to_streaming_s: (if $ts == null then null else $ts - $t0 end),
       stop_s: ($bb - $t0), basebackup_s: ($bb1 - $bb), start_to_streaming_s: (if $ts == null then null else $ts - $bb1 end)}')")
    say "standbys rebuild run $i: $(jq -r 'def r3: if . == null then null else . * 1000 | round / 1000 end;
      "stop to streaming \(.stop_to_streaming_s | r3) s (pg_basebackup \(.basebackup_s | r3) s, start to streaming \(.start_to_streaming_s | r3) s)"' <<<"${rebuild_json[-1]}")"
    standby_caught_up || true
  done
}
