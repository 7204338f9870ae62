# bench/run.sh: the JSON of one cell (medians and ratios) and its summary on stderr.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

cell_report() {
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
                     peak_extra_vs_limit: ($runs | med(if .disk_limit_bytes > 0 then .peak_extra_bytes / .disk_limit_bytes else null end))},
            # the rollback downtime by the path the agent took ("parked target", "snapshot restore")
            downtime_by_path: ($runs | group_by(.rollback_path) | map({key: (.[0].rollback_path // "unknown"),
                               value: {runs: length, median_s: med(.downtime_s), worst_s: (map(.downtime_s) | max)}}) | from_entries),
            # pgbackrest backend: the snapshot job by backup type (status()'"'"'s snapshot.pgbackrest.type);
            # the first one is full (the stanza has no backup yet), the later ones build on it
            snapshot_by_type: ($runs | map(select(.snapshot_type != null)) | group_by(.snapshot_type)
                               | map({key: .[0].snapshot_type, value: {runs: length, snapshot_s: med(.snapshot_s),
                                      backup_s: med(.snapshot_pgbackrest.backup_s), repo_delta_bytes: med(.snapshot_pgbackrest.repo_delta_bytes),
                                      tps_ratio: med(.tps_ratio)}}) | from_entries)},
     pgbackrest: {full_backup_s: $pb, full_backup_median_s: ($pb | median),
                  tps_during_backup: $pbt, tps_ratio_during_backup: (($pbt | median) as $m | if $m == null or $base == null then null else $m / $base end),
                  delta_restore: $delta, delta_downtime_median_s: ($delta | med(.downtime_s))},
     raw_copy: {command: $cp_cmd, s: $cp, median_s: ($cp | median)}}
    | .ratios = {downtime_vs_pgbackrest_delta: (if .pgbackrest.delta_downtime_median_s > 0 and .ours.median.downtime_s != null then .ours.median.downtime_s / .pgbackrest.delta_downtime_median_s else null end),
                 snapshot_vs_pgbackrest_full: (if .pgbackrest.full_backup_median_s > 0 and .ours.median.snapshot_s != null then .ours.median.snapshot_s / .pgbackrest.full_backup_median_s else null end),
                 snapshot_vs_raw_copy: (if .raw_copy.median_s > 0 and .ours.median.snapshot_s != null then .ours.median.snapshot_s / .raw_copy.median_s else null end),
                 snapshot_full_vs_pgbackrest_full: (if .pgbackrest.full_backup_median_s > 0 and .ours.snapshot_by_type.full.snapshot_s != null then .ours.snapshot_by_type.full.snapshot_s / .pgbackrest.full_backup_median_s else null end),
                 snapshot_incr_vs_pgbackrest_full: (if .pgbackrest.full_backup_median_s > 0 and .ours.snapshot_by_type.incr.snapshot_s != null then .ours.snapshot_by_type.incr.snapshot_s / .pgbackrest.full_backup_median_s else null end)}' \
    >"$W/cells/$method-$mb.json"

  jq -r 'def r3: if . == null then null else . * 1000 | round / 1000 end;
    def mb: if . == null then null else . / 1048576 | round end;
    "\n\(.method) at \(.target_mb) MB (cluster \(.size_mb) MB on \(.filesystem)), medians of \(.ours.runs | length) runs; snapshots: \(.methods_used | join(","))",
    "  rollback downtime seen by a client   ours \(.ours.median.downtime_s | r3) s (worst \(.ours.median.worst_downtime_s | r3))   pgBackRest delta \(.pgbackrest.delta_downtime_median_s | r3) s   ratio \(.ratios.downtime_vs_pgbackrest_delta | r3)",
    "  whole upgrade (begin to terminal)    \(.ours.median.upgrade_s | r3) s, \(.ours.median.upgrade_excl_approval_s | r3) s without the approval hand-off",
    "  peak extra disk                      \(.ours.median.peak_extra_bytes | mb) MB (the sandbox tree: \(.ours.runs | map(.tree_peak_extra_bytes) | max | mb) MB); limit 5% of the cluster + WAL written \(.ours.median.disk_limit_bytes | mb) MB",
    "  snapshot                             ours \(.ours.median.snapshot_s | r3) s   pgBackRest full \(.pgbackrest.full_backup_median_s | r3) s   \(.raw_copy.command) \(.raw_copy.median_s | r3) s",
    "  tps during snapshot / baseline       \(.ours.median.tps_ratio | r3) (baseline \(.baseline_tps | r3)); during pgBackRest full backup \(.pgbackrest.tps_ratio_during_backup | r3)",
    "  rollback downtime by path            \(.ours.downtime_by_path | to_entries | map("\(.key) \(.value.median_s | r3) s (\(.value.runs) run(s))") | join(", "))",
    (if .method == "pgbackrest" then
      "  snapshot by backup type              \(.ours.snapshot_by_type | to_entries | map("\(.key) \(.value.snapshot_s | r3) s (pgbackrest backup \(.value.backup_s | r3) s, \(.value.repo_delta_bytes | mb) MB new in the repository, \(.value.runs) run(s))") | join("; ") | if . == "" then "none recorded" else . end)"
     else empty end),
    ""' \
    "$W/cells/$method-$mb.json" >&2
}

