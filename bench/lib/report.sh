# bench/run.sh: the targets, the charts and the results file, from every cell's JSON.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

# --- targets (issue 3/7: speed that holds on a busy server) ------------------------------------
CELLS="$( (cat "$W"/cells/*.json 2>/dev/null || true) | jq -s 'sort_by(.method, .target_mb)')"  # no cell: []
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
    "backend pgbackrest") [ "$used" = pgbackrest ] || echo "the agent took $used snapshots (status() snapshot method), though its backend is pgbackrest" ;;
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

for m in basebackup reflink pgbackrest; do
  mapfile -t ms < <(sizes_run "$m")
  if [ "${#ms[@]}" = 0 ]; then
    why="$(skip_reason "$m")"; why="${why:-not run}"
    target "rollback downtime seen by a client, pgbench writing ($m)" null 1.0 null "$why"
    target "rollback downtime / pgBackRest delta restore's, both seen by a client ($m, 4096 MB)" null 0.2 null "$why"
    if [ "$m" = reflink ]; then
      target "whole upgrade at 16384 MB / at 1024 MB (reflink)" null 1.5 null "$why"
      target "peak extra disk / (5% of the cluster + WAL written meanwhile) (reflink)" null 1.0 null "$why"
      target "tps during the snapshot / baseline (reflink)" null 0.9 null "$why"
    elif [ "$m" = basebackup ]; then
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
  elif [ "$m" = basebackup ]; then
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

# --- the pgbackrest backend against the local backend, same size, same run ---------------------
# Ratios pgbackrest / local (basebackup on the same filesystem; reflink when a reflink cell ran at
# the same size). The first snapshot of a pgbackrest cell is a full backup, the later ones
# incremental ones; the local backend's snapshot is the same kind of copy every time.
COMPARISONS="$(jq '
  def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;
  . as $cells | [.[] | select(.method == "pgbackrest") | . as $p
    | $cells[] | select((.method == "basebackup" or .method == "reflink") and .target_mb == $p.target_mb) | . as $l
    | {target_mb: $p.target_mb, against: $l.method, figures: [
        {figure: "rollback downtime seen by a client (median)", unit: "s",
         pgbackrest: $p.ours.median.downtime_s, local: $l.ours.median.downtime_s},
        ($p.ours.downtime_by_path | to_entries[] | . as $e |
         {figure: "rollback downtime, \($e.key) path", unit: "s", pgbackrest: $e.value.median_s,
          local: ($l.ours.downtime_by_path[$e.key].median_s // null)}),
        {figure: "snapshot job, the first one (a full backup)", unit: "s",
         pgbackrest: ($p.ours.snapshot_by_type.full.snapshot_s // null), local: $l.ours.median.snapshot_s},
        {figure: "snapshot job, the later ones (incremental)", unit: "s",
         pgbackrest: ($p.ours.snapshot_by_type.incr.snapshot_s // null), local: $l.ours.median.snapshot_s},
        {figure: "whole upgrade, without the approval hand-off", unit: "s",
         pgbackrest: $p.ours.median.upgrade_excl_approval_s, local: $l.ours.median.upgrade_excl_approval_s},
        {figure: "peak extra disk", unit: "MB",
         pgbackrest: ($p.ours.median.peak_extra_bytes // null | if . == null then null else . / 1048576 | round end),
         local: ($l.ours.median.peak_extra_bytes // null | if . == null then null else . / 1048576 | round end)},
        {figure: "tps during the snapshot / baseline", unit: "",
         pgbackrest: $p.ours.median.tps_ratio, local: $l.ours.median.tps_ratio}]
        | map(. + {ratio: ratio(.pgbackrest; .local)})}]' <<<"$CELLS")"
COMPARISON_LINES=()
while IFS= read -r line; do COMPARISON_LINES+=("$line"); done < <(jq -r --argjson runs "$RUNS" '
  def r3: if . == null then "null" elif type == "number" then (. * 1000 | round / 1000 | tostring) else tostring end;
  def v(u): if . == null then "null" else (r3 + (if u == "" then "" else " " + u end)) end;
  .[] | .against as $l | "\(.target_mb) MB, against \($l):",
  (.figures[] | .unit as $u | "  \(.figure | . + " " * ([56 - length, 1] | max)) pgbackrest \(.pgbackrest | v($u)), \($l) \(.local | v($u)), ratio \(.ratio | r3)"
     + (if .pgbackrest == null and (.figure | endswith("(incremental)")) and $runs < 2 then "  (not measured: BENCH_RUNS=1 takes only the first, full, snapshot)" else "" end))' <<<"$COMPARISONS")
if [[ " $METHODS " == *" pgbackrest "* ]] && [ "${#COMPARISON_LINES[@]}" = 0 ]; then
  COMPARISON_LINES+=("none: no size at which both a pgbackrest cell and a local-backend cell (basebackup, reflink) completed (see the JSON's skipped)")
fi

# --- the standbys cells: a standby streaming again after a rollback, against a pg_basebackup rebuild ---
# No target in the issue. MET when rebuild / ours >= STANDBYS_THRESHOLD (2: the resync must at
# least halve the time a DBA would otherwise spend rebuilding the standby, or the rewind path would
# not be worth having over a plain re-clone); otherwise the ratio is reported as a measurement.
STANDBYS_THRESHOLD=2
STANDBYS_CELLS="$( (cat "$W"/standbys/*.json 2>/dev/null || true) | jq -s --argjson l "$STANDBYS_THRESHOLD" '
  sort_by(.target_mb) | map(. + {verdict: {limit: $l, met: (if .ratios.rebuild_vs_ours == null then null else .ratios.rebuild_vs_ours >= $l end)}})')"
STANDBY_LINES=()
while IFS= read -r line; do STANDBY_LINES+=("$line"); done < <(jq -r '
  def r3: if . == null then "null" else (. * 1000 | round / 1000 | tostring) end;
  .[] | "\(if .verdict.met == true then "MET" elif .verdict.met == false then "MEASURED" else "NOT EVALUATED" end | . + " " * (14 - length)) standby streaming again: pg_basebackup rebuild / ours (basebackup, \(.target_mb) MB)  value \(.ratios.rebuild_vs_ours | r3)  (MET at >= \(.verdict.limit))  ours \(.ours.median.rollback_start_to_streaming_s | r3) s from the rollback'"'"'s start [\(.ours.runs | map(.rollback_start_to_streaming_s | r3) | join(", "))], the resync itself \(.ours.median.resync_s | r3) s [\(.ours.runs | map(.resync_s | r3) | join(", "))], outcomes \(.ours.outcomes | to_entries | map("\(.key) \(.value)") | join(", ")); rebuild \(.rebuild.median.stop_to_streaming_s | r3) s [\(.rebuild.runs | map(.stop_to_streaming_s | r3) | join(", "))]\(if .failed then "; failed: " + .failed else "" end)"' <<<"$STANDBYS_CELLS")
if [ "${#STANDBY_LINES[@]}" = 0 ] && [ "$STANDBYS" != 0 ] && [[ " $METHODS " == *" basebackup "* ]]; then
  STANDBY_LINES+=("NOT EVALUATED  standby streaming again: no standbys cell completed (see the JSON's skipped)")
fi

# --- charts: one per figure against size -------------------------------------------------------
CHARTS=()
if [ "$CHART" = 1 ] && [ "$(jq length <<<"$CELLS")" -gt 0 ]; then
  for m in basebackup reflink pgbackrest; do
    jq -r --arg m "$m" '.[] | select(.method == $m) | [.size_mb, .ours.median.downtime_s, .pgbackrest.delta_downtime_median_s,
      .ours.median.upgrade_excl_approval_s, (.ours.median.peak_extra_bytes // null | if . == null then null else . / 1048576 end),
      (.ours.median.disk_limit_bytes // null | if . == null then null else . / 1048576 end),
      .ours.median.tps_ratio, .pgbackrest.tps_ratio_during_backup, .ours.median.snapshot_s,
      .pgbackrest.full_backup_median_s, .raw_copy.median_s,
      (.ours.snapshot_by_type.full.snapshot_s // null), (.ours.snapshot_by_type.incr.snapshot_s // null)] | map(if . == null then "null" else tostring end) | join(" ")' \
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
    "pgbackrest:2:pg_safe_upgrade (pgbackrest backend)" \
    "basebackup:3:pgBackRest stop + delta restore + start (normal fs)" "reflink:3:pgBackRest stop + delta restore + start (xfs)"
  chart upgrade "Whole upgrade, begin to terminal state (without the approval hand-off)" "seconds" \
    "basebackup:4:pg_safe_upgrade (basebackup)" "reflink:4:pg_safe_upgrade (reflink)" \
    "pgbackrest:4:pg_safe_upgrade (pgbackrest backend)"
  chart disk "Peak extra disk during the upgrade" "MB" \
    "basebackup:5:pg_safe_upgrade (basebackup)" "reflink:5:pg_safe_upgrade (reflink)" \
    "pgbackrest:5:pg_safe_upgrade (pgbackrest backend)" \
    "basebackup:6:5% of the cluster + WAL written (basebackup runs)" "reflink:6:5% of the cluster + WAL written (reflink runs)"
  chart tps "Production throughput during the snapshot / baseline" "tps ratio" \
    "basebackup:7:pg_safe_upgrade snapshot (basebackup)" "reflink:7:pg_safe_upgrade snapshot (reflink)" \
    "pgbackrest:7:pg_safe_upgrade snapshot (pgbackrest backend)" \
    "basebackup:8:pgBackRest full backup (normal fs)" "reflink:8:pgBackRest full backup (xfs)"
  chart snapshot "Snapshot time, pgbench writing" "seconds" \
    "basebackup:9:pg_safe_upgrade (basebackup)" "reflink:9:pg_safe_upgrade (reflink)" \
    "pgbackrest:12:pg_safe_upgrade, first snapshot (pgbackrest backend, full)" \
    "pgbackrest:13:pg_safe_upgrade, later snapshots (pgbackrest backend, incremental)" \
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
  --argjson idle "${IDLE_JSON:-null}" --argjson comparisons "$COMPARISONS" --argjson standbys "$STANDBYS_CELLS" --argjson targets "$(printf '%s\n' "${TARGETS[@]}" | jq -s .)" \
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
            pgbackrest: "process-max=2 compress-type=lz4 start-fast=y, local repository; archive_command is pgBackRest'"'"'s only during its part, the agent'"'"'s only during ours",
            standbys: "method basebackup, sandbox up --standbys 1: ours = from the event state verifying -> rolling_back until standby1'"'"'s pg_stat_wal_receiver (polled every 50 ms through its env) shows streaming on the primary'"'"'s new timeline, beside the resync'"'"'s own upgrade_standbys.detail.result.seconds; rebuild = pg_ctl stop, data directory aside, pg_basebackup -X stream -c fast -R, its conf files copied back, pg_ctl start, until streaming; both with pgbench writing; MET when rebuild / ours >= 2 (no target in the issue)",
            pgbackrest_backend: "method pgbackrest: safe-upgrade sandbox up --backend pgbackrest (stanza sandbox, posix repository in the sandbox); each snapshot is pgbackrest backup --type=incr (full when the stanza has none) + verify, its type from status() snapshot.pgbackrest.type; clone, parked target and cold rollback are pgbackrest restore of it"},
   skipped: $skipped, cells: $cells, idle_worker: $idle, targets: $targets,
   pgbackrest_backend_vs_local: $comparisons, standbys: $standbys, charts: $charts}' >"$OUT"

echo
echo "targets (issue 3/7, speed that holds on a busy server):"
printf '  %s\n' "${RESULT_LINES[@]}"
if [ "${#COMPARISON_LINES[@]}" -gt 0 ]; then
  echo
  echo "pgbackrest backend against the local backend (same size, same run; ratio = pgbackrest / local):"
  printf '  %s\n' "${COMPARISON_LINES[@]}"
fi
if [ "${#STANDBY_LINES[@]}" -gt 0 ]; then
  echo
  echo "standbys after a rollback (no target in the issue; MET when a pg_basebackup rebuild takes >= $STANDBYS_THRESHOLD x ours, else the measured ratio):"
  printf '  %s\n' "${STANDBY_LINES[@]}"
fi
echo
echo "results: $OUT"
