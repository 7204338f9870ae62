#!/bin/bash
# Runs the pg_regress suite of the SQL surface against the installed extension, in a temporary
# instance with safe_upgrade preloaded. pg_regress refuses to run initdb as root, so as root the
# suite is copied to a directory owned by postgres and run as that user.
# Usage: tests/regress/run.sh [test ...]   (default: every test in the schedule)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bindir="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
pg_regress="${PG_REGRESS:-/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress}"
[ -x "$pg_regress" ] || { echo "pg_regress not found at $pg_regress (install postgresql-server-dev-15)" >&2; exit 2; }

work="$(mktemp -d /tmp/su-regress-XXXXXX)"
cleanup() { if [ "${SU_KEEP_REGRESS_DIR:-}" = "" ]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT
cp -r "$here/sql" "$here/expected" "$here/regress.conf" "$here/schedule" "$work/"
chmod 755 "$work"

run=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres: "$work"
  run=(runuser -u postgres --)
fi

args=(--temp-instance="$work/tmp_check" --temp-config="$work/regress.conf" --bindir="$bindir"
      --inputdir="$work" --outputdir="$work" --dbname=su_regression --no-locale --encoding=UTF8)
if [ $# -gt 0 ]; then
  args+=("$@")
else
  args+=(--schedule="$work/schedule")
fi

status=0
(cd "$work" && "${run[@]}" "$pg_regress" "${args[@]}") || status=$?
if [ $status -ne 0 ]; then
  [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
  [ -f "$work/log/postmaster.log" ] && { echo "--- postmaster.log (tail) ---"; tail -n 50 "$work/log/postmaster.log"; }
  # Keep what is needed to update the expected files.
  SU_KEEP_REGRESS_DIR=1
fi
exit $status
