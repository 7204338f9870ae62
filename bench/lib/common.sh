# bench/run.sh: the OS user PostgreSQL runs as, the tools the bench needs, the scratch directory
# and its cleanup, and the SQL and pgBackRest helpers.
# Sourced by bench/run.sh; it uses the settings and helpers defined there.

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
