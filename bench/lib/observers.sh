# bench/run.sh: what watches a measured window (pgbench writers, the client prober, the disk
# sampler) and the agent settings of a cell.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

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
# The paths whose filesystems the disk sampler watches: the data directory, the snapshots, the
# agent's work directory and, with the pgbackrest backend, the stanza's repository (the snapshots
# are backups there, and the archived WAL goes there).
disk_paths() {
  echo "$SB/data" "$SB/snapshots" "$SB/work"
  [ -d "$SB/pgbackrest" ] && echo "$SB/pgbackrest"
  return 0
}
start_observers() {  # dir
  # shellcheck disable=SC2046
  "$PROBE" disk --out "$1/disk.json" --tree "$SB" $(disk_paths) &
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
