#!/usr/bin/env bash
# `make demo`: three extension upgrades on a local sandbox, told for someone who has never seen
# pg_safe_upgrade:
#   1. hstore 1.4 -> 1.8 in two application databases (shop, with data, and crm), from the
#      control database where safe_upgrade lives: succeeds in both;
#   2. an upgrade that would break a view: blocked by the dry run, production untouched;
#   3. an upgrade that commits but fails its health check on production: rolled back automatically.
# Exits 0 only when all three ended as expected. Re-runnable: it drops and recreates its objects.
#
# Environment: BUILD_DIR (where safe-upgrade was built, default ./build), DEMO_DIR (the sandbox,
# default /tmp/safe-upgrade-demo; the postgres OS user must be able to reach it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build}
DEMO_DIR=${DEMO_DIR:-/tmp/safe-upgrade-demo}
cli="$BUILD_DIR/safe-upgrade"
[ -x "$cli" ] || cli=$(command -v safe-upgrade || true)
if [ -z "$cli" ] || [ ! -x "$cli" ]; then
  echo "demo: cannot find safe-upgrade; build it first with: make" >&2
  exit 1
fi
pg_bindir=$(pg_config --bindir)

if [ -t 1 ]; then bold=$'\033[1m'; green=$'\033[32m'; red=$'\033[31m'; off=$'\033[0m'; else bold= green= red= off=; fi
title() { printf '\n%s==== %s ====%s\n\n' "$bold" "$*" "$off"; }
# Paragraphs for people: wrapped, indented, set apart from the tool's own output.
tell() { printf '%s\n' "$*" | fold -s -w 96 | sed 's/^/  | /'; echo; }
sql() { "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
value() { "$pg_bindir/psql" -X -A -t -v ON_ERROR_STOP=1 -c "$1"; }
value_in() { "$pg_bindir/psql" -X -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

title "pg_safe_upgrade demo"
tell "PostgreSQL extension upgrades (ALTER EXTENSION ... UPDATE) are one-way doors: once the" \
  "upgrade script has committed, nothing undoes it. pg_safe_upgrade makes every upgrade recoverable:" \
  "it takes a verified snapshot first, rehearses the upgrade on a throwaway clone, and only then" \
  "upgrades production, right after a named restore point. If production is unhealthy afterwards," \
  "it rolls the whole cluster back to that restore point (point-in-time recovery)."
tell "This demo runs a sandbox in $DEMO_DIR: a PostgreSQL 15 cluster with WAL archiving, the" \
  "safe_upgrade extension and its agent (the helper process that takes backups and restores them)."

"$cli" sandbox up --dir "$DEMO_DIR"
set -a
# shellcheck disable=SC1091
. "$DEMO_DIR/env"
set +a
echo

for ext in su_fixture_dropfn su_rollback_fixture; do
  if [ "$(value "SELECT count(*) FROM pg_available_extensions WHERE name = '$ext'")" != 1 ]; then
    echo "demo: the test extension $ext is not installed; run: sudo make -C tests/fixtures install" >&2
    exit 1
  fi
done

# Let the scheduler see the agent before the first upgrade asks for it.
for _ in $(seq 1 100); do
  [ "$(value "SELECT coalesce(reachable, false) FROM safe_upgrade.agent_status()")" = t ] && break
  sleep 0.3
done

# --- a clean slate, so the demo can be run again ------------------------------------------------
# An upgrade left in flight by an interrupted run would block a new one of the same extension.
for id in $(value "SELECT id FROM safe_upgrade.upgrades WHERE state IN ('queued','snapshotting','dry_running','awaiting_approval','scheduled') ORDER BY id"); do
  echo "demo: cancelling upgrade $id left over from an earlier run"
  value "SELECT safe_upgrade.cancel($id)" >/dev/null || true
done
for id in $(value "SELECT id FROM safe_upgrade.upgrades WHERE state IN ('queued','snapshotting','dry_running','awaiting_approval','scheduled','applying','verifying','rolling_back') ORDER BY id"); do
  echo "demo: waiting for upgrade $id from an earlier run to finish"
  value "SELECT safe_upgrade.wait($id, '10 minutes')" >/dev/null || true
done
# Data directories that earlier rollbacks moved aside (the agent never deletes them itself).
rm -rf "$DEMO_DIR"/data.failed-* "$DEMO_DIR"/data.rollback-failed-*
sql <<'SQL'
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS demo CASCADE;
DROP EXTENSION IF EXISTS hstore, su_fixture_dropfn, su_rollback_fixture CASCADE;
DROP DATABASE IF EXISTS shop WITH (FORCE);
DROP DATABASE IF EXISTS crm WITH (FORCE);
CREATE DATABASE shop;
CREATE DATABASE crm;
DELETE FROM safe_upgrade.health_checks WHERE name LIKE 'demo_%';
CREATE SCHEMA demo;
SQL

results=()
record() {  # scene, expected exit code, actual exit code, expected outcome words
  if [ "$2" = "$3" ]; then
    results+=("${green}ok${off}      $1 (exit code $3: $4)")
  else
    results+=("${red}FAILED${off}  $1 (exit code $3, expected $2: $4)")
  fi
}

# --- 1. a safe upgrade that succeeds -------------------------------------------------------------
title "1. hstore 1.4 -> 1.8 in the application databases: a safe upgrade that succeeds"
sql -d crm -c "CREATE EXTENSION hstore VERSION '1.4'"
sql -d shop <<'SQL'
CREATE EXTENSION hstore VERSION '1.4';
CREATE SCHEMA demo;
CREATE TABLE demo.customers (id serial PRIMARY KEY, name text NOT NULL, attrs hstore NOT NULL);
INSERT INTO demo.customers (name, attrs)
  SELECT 'customer ' || g, hstore(ARRAY['plan', 'seats'], ARRAY[CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'free' END, (g % 50)::text])
    FROM generate_series(1, 20000) g;
CREATE VIEW demo.pro_customers AS SELECT id, name, (attrs -> 'seats')::int AS seats FROM demo.customers WHERE attrs -> 'plan' = 'pro';
SQL
pro_before=$(value_in shop "SELECT count(*) FROM demo.pro_customers")
tell "Extensions live in the application's databases, not where safe_upgrade is (database" \
  "$PGDATABASE here). We installed hstore 1.4 in two of them: shop, with 20000 customers in an hstore" \
  "column and a view (demo.pro_customers, $pro_before rows) that uses hstore's -> operator, and crm." \
  "A point-in-time recovery rewinds the whole cluster, so one upgrade covers both databases, under one" \
  "snapshot and one restore point. First, the plan: a read-only report of what the upgrade involves," \
  "verdict first, with the databases it finds the extension in."
"$cli" plan hstore 1.8 || true
echo
tell "Now the upgrade itself. 'run' snapshots the cluster, rehearses the upgrade on a clone, creates" \
  "the restore point, upgrades production and checks it. --approve means: apply without asking once" \
  "the rehearsal passed."
set +e
"$cli" run hstore 1.8 --approve
rc=$?
set -e
version=$(value_in shop "SELECT extversion FROM pg_extension WHERE extname = 'hstore'")
crm_version=$(value_in crm "SELECT extversion FROM pg_extension WHERE extname = 'hstore'")
pro_after=$(value_in shop "SELECT count(*) FROM demo.pro_customers")
echo
if [ "$rc" = 0 ] && [ "$version" = 1.8 ] && [ "$crm_version" = 1.8 ] && [ "$pro_after" = "$pro_before" ]; then
  tell "What happened: hstore is now at $version in shop and in crm, the view still returns its" \
    "$pro_after rows, and the snapshot and restore point are kept in case you want to undo it later" \
    "(safe-upgrade rollback ID). 'run ... --database shop' would have upgraded shop only."
else
  tell "Unexpected: exit code $rc, hstore at $version in shop and $crm_version in crm, view rows $pro_after" \
    "(expected 0, 1.8, 1.8, $pro_before)."
  rc="$rc/unexpected"
fi
record "hstore 1.4 -> 1.8 in shop and crm succeeded" 0 "$rc" "succeeded"

# --- 2. an upgrade blocked by the dry run --------------------------------------------------------
title "2. an upgrade that would break a view: blocked by the dry run"
sql <<'SQL'
CREATE EXTENSION su_fixture_dropfn VERSION '1.0';
CREATE VIEW demo.answers AS SELECT su_dropfn_answer() AS answer;
SQL
tell "su_fixture_dropfn is a small test extension. Its version 1.1 renames the function" \
  "su_dropfn_answer(), so the upgrade script drops the old one. Our view demo.answers uses it." \
  "Run blindly on production, this upgrade would fail at best, or break things at worst." \
  "pg_safe_upgrade rehearses it on a clone first."
set +e
"$cli" run su_fixture_dropfn 1.1 --approve
rc=$?
set -e
version=$(value "SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'")
answer=$(value "SELECT answer FROM demo.answers")
echo
if [ "$rc" = 3 ] && [ "$version" = 1.0 ] && [ "$answer" = 42 ]; then
  tell "What happened: the upgrade failed on the throwaway clone (the view depends on the function" \
    "it drops), so it was blocked (exit code 3) before production was touched. Production still runs" \
    "version $version and demo.answers still answers $answer. Fix the view, then try again."
else
  tell "Unexpected: exit code $rc, extension at $version, view answer '$answer' (expected 3, 1.0, 42)."
  rc="$rc/unexpected"
fi
record "su_fixture_dropfn 1.0 -> 1.1 blocked" 3 "$rc" "blocked by the dry run"

# --- 3. an upgrade rolled back automatically ----------------------------------------------------
title "3. an upgrade that fails its health check on production: rolled back"
sql <<'SQL'
CREATE EXTENSION su_rollback_fixture VERSION '1.0';
CREATE TABLE demo.orders (id serial PRIMARY KEY, amount int NOT NULL);
INSERT INTO demo.orders (amount) SELECT 10 * g FROM generate_series(1, 90) g;
SELECT safe_upgrade.add_health_check('demo_orders_are_valid',
  'SELECT bool_and(su_rb_validate(amount)) FROM demo.orders', 'su_rollback_fixture') \gset
SQL
tell "su_rollback_fixture 2.0 has a regression: its su_rb_validate() rejects amounts of 1000 or" \
  "more. We registered a health check, 'every order is valid', that pg_safe_upgrade runs after the" \
  "upgrade, on the clone and then on production. All 90 orders are below 1000 for now."
tell "While the upgrade is being rehearsed on the clone (made from the snapshot), a customer places" \
  "an order of 1500. The clone does not have it, so the rehearsal passes. Production has it, so" \
  "production fails the check once upgraded: pg_safe_upgrade then rolls the cluster back to the" \
  "restore point. The server restarts; the command line reconnects and keeps following."
last_id=$(value "SELECT coalesce(max(id), 0) FROM safe_upgrade.upgrades")
(
  # The big order arrives once the snapshot is taken, before the restore point is created.
  for _ in $(seq 1 3000); do
    state=$(value "SELECT state FROM safe_upgrade.upgrades WHERE id > $last_id AND extname = 'su_rollback_fixture' ORDER BY id DESC LIMIT 1" 2>/dev/null || true)
    case "$state" in
      dry_running | awaiting_approval | scheduled | applying) break ;;
      blocked | failed | cancelled) exit 0 ;;
    esac
    sleep 0.1
  done
  value "INSERT INTO demo.orders (amount) VALUES (1500)" >/dev/null
  echo "  >>> meanwhile, a customer placed an order of 1500 <<<"
) &
orders_waiter=$!
set +e
"$cli" run su_rollback_fixture 2.0 --approve
rc=$?
set -e
wait "$orders_waiter" || true
version=$(value "SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'")
big=$(value "SELECT count(*) FROM demo.orders WHERE amount = 1500")
echo
if [ "$rc" = 4 ] && [ "$version" = 1.0 ]; then
  path=$(value "SELECT report #>> '{rollback,path}' FROM safe_upgrade.upgrades WHERE extname = 'su_rollback_fixture' ORDER BY id DESC LIMIT 1")
  if [ "$path" = "parked target" ]; then
    how="swapped in the copy of the snapshot that it had parked at the restore point while the upgrade ran, so the server was down only for a stop and a start, whatever the database size"
  else
    how="restored the snapshot and replayed the archived WAL up to the restore point"
  fi
  tell "What happened: version 2.0 committed on production, then the health check found the order" \
    "of 1500 invalid. pg_safe_upgrade stopped the server and $how: the extension is back at" \
    "$version, as it was at the restore point taken just before the upgrade (exit code 4, rolled back)."
  tell "What a rollback costs: every write committed after the restore point is gone (the data-loss" \
    "window printed above). The order of 1500 was placed before the restore point, so it is still" \
    "there ($big row), and the old version accepts it. The upgraded data directory was kept aside in" \
    "$DEMO_DIR, never deleted."
else
  tell "Unexpected: exit code $rc, extension at $version (expected 4 and 1.0)."
  rc="$rc/unexpected"
fi
record "su_rollback_fixture 1.0 -> 2.0 rolled back" 4 "$rc" "rolled back automatically"

# --- summary ---------------------------------------------------------------------------------
title "summary"
failed=0
for r in "${results[@]}"; do
  printf '  %s\n' "$r"
  case "$r" in *FAILED*) failed=1 ;; esac
done
echo
"$cli" history --limit 3
echo
tell "Look around: 'set -a; . $DEMO_DIR/env; set +a' then psql, safe-upgrade status ID," \
  "safe-upgrade history. Stop the sandbox with: $cli sandbox down --dir $DEMO_DIR"
exit "$failed"
