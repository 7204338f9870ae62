#!/usr/bin/env bash
# Documentation check (part of `make check`): every name a user can type must be documented in
# README.md or docs/*.md. The names are read from the sources, so adding a setting, a flag, a
# subcommand or an SQL function without documenting it fails the check:
#   - GUCs: DefineCustom*Variable("safe_upgrade.x", ...) in extension/src/pg/module.cpp (called
#     through the boundary guard, as PgGuard(&DefineCustom*Variable, "safe_upgrade.x", ...));
#   - agent settings: Read(tbl, "section", "key", ...) in agent/base/config.cpp;
#   - CLI subcommands (add_subcommand("x", ...)) and flags (add_option/add_flag("--x")) in cli/*.cpp;
#   - SQL functions: CREATE FUNCTION in sql/ (every *.sql below it), except names starting with "_";
#   - begin() options: the list _normalize_options() accepts (c_keys in sql/).
set -euo pipefail
cd "$(dirname "$0")/.."

docs=(README.md docs/*.md)
for f in "${docs[@]}"; do
  [ -f "$f" ] || { echo "docs_check: $f is missing"; exit 1; }
done
text=$(cat "${docs[@]}")

missing=()
checked=0
# documented KIND NAME PATTERN: PATTERN is an extended regex that must match somewhere in the docs.
documented() {
  checked=$((checked + 1))
  if ! grep -qE -- "$3" <<<"$text"; then missing+=("$1 $2"); fi
}
quote() { sed 's/[][\.*^$+?(){}|/]/\\&/g' <<<"$1"; }

gucs=$(grep -oE 'DefineCustom[A-Za-z]+Variable(\(|, )"safe_upgrade\.[a-z_]+"' extension/src/pg/module.cpp |
  sed -E 's/[^"]*"//; s/"$//' | sort -u)
[ -n "$gucs" ] || { echo "docs_check: found no GUCs in extension/src/pg/module.cpp"; exit 1; }
for g in $gucs; do documented "setting" "$g" "$(quote "$g")"; done

keys=$(grep -oE 'Read\(tbl, "[a-z]+", "[a-z_]+"' agent/base/config.cpp | sed -E 's/.*"([a-z]+)", "([a-z_]+)"/\1.\2/' | sort -u)
[ -n "$keys" ] || { echo "docs_check: found no agent settings in agent/base/config.cpp"; exit 1; }
for k in $keys; do
  # Documented as `key` in its section's table, e.g. `snapshot_dir`.
  documented "agent setting" "$k" "\`${k#*.}\`"
done

subcommands=$(grep -ohE 'add_subcommand\("[a-z-]+"' cli/*.cpp | sed -E 's/.*\("//; s/"$//' | sort -u)
[ -n "$subcommands" ] || { echo "docs_check: found no subcommands in cli/"; exit 1; }
for s in $subcommands; do
  # As typed: "safe-upgrade [--dsn DSN] plan", "safe-upgrade sandbox up", ...
  documented "subcommand" "$s" "safe-upgrade( \[--dsn DSN\])?( sandbox)? $(quote "$s")( |\$|\`)"
done

flags=$(grep -ohE 'add_(option|flag)\("[^"]*"' cli/*.cpp | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u)
[ -n "$flags" ] || { echo "docs_check: found no flags in cli/"; exit 1; }
for f in $flags; do documented "flag" "$f" "$(quote "$f")([^a-z0-9-]|\$)"; done

functions=$(grep -ohiE 'CREATE[[:space:]]+(OR[[:space:]]+REPLACE[[:space:]]+)?FUNCTION[[:space:]]+[@a-z_.]*[a-z0-9_]+[[:space:]]*\(' -r --include='*.sql' sql/ |
  sed -E 's/[[:space:]]*\($//; s/.*[[:space:].]//' | grep -v '^_' | sort -u)
[ -n "$functions" ] || { echo "docs_check: found no SQL functions in sql/"; exit 1; }
for fn in $functions; do documented "SQL function" "$fn" "$(quote "$fn")\("; done

options=$(find sql -name '*.sql' -exec sed -n "/c_keys constant text\[\] := ARRAY\[/,/\];/p" {} + | grep -oE "'[a-z_]+'" | tr -d "'" | sort -u)
[ -n "$options" ] || { echo "docs_check: found no begin() options in sql/"; exit 1; }
# Each option has a row in a table, as `name` | default | meaning.
for o in $options; do documented "begin() option" "$o" '`'"$o"'` [|]'; done

if [ ${#missing[@]} -gt 0 ]; then
  echo "docs_check: ${#missing[@]} of $checked names are not documented in README.md or docs/*.md:"
  printf '  %s\n' "${missing[@]}"
  exit 1
fi
echo "docs_check: all $checked settings, agent settings, subcommands, flags, SQL functions and begin() options are documented"
