#!/usr/bin/env bash
# Layout check (part of `make check`), the rules of docs/architecture.md that a reader can rely on:
#   - the agent's folders are layers: a file includes headers of its own layer or of a lower one,
#     never of a higher one (base < postgres < storage < checks < scratch < snapshots < jobs <
#     daemon; the sandbox may use every layer but the daemon, and no layer may use the sandbox);
#   - no source file outside tests/ (C++, SQL, shell, proto) is over 500 lines;
#   - every .cpp in extension/src/core and extension/src/rpc includes core/cpp_only.h, which
#     fails the build when a PostgreSQL server header reaches the file.
set -euo pipefail
cd "$(dirname "$0")/.."

layers=(base postgres storage checks scratch snapshots jobs daemon)
rank() {
  local i
  for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done
  [ "$1" = sandbox ] && { echo 100; return; }
  echo -1
}

problems=()
for dir in agent/*/; do
  layer=$(basename "$dir")
  own=$(rank "$layer")
  [ "$own" -ge 0 ] || continue
  while IFS=: read -r file line include; do
    used=$(sed -E 's/#include "([a-z_]+)\/.*/\1/' <<<"$include")
    theirs=$(rank "$used")
    [ "$theirs" -ge 0 ] || continue
    if [ "$theirs" -gt "$own" ] || { [ "$used" = sandbox ] && [ "$layer" != sandbox ]; }; then
      problems+=("$file:$line: the $layer layer includes $used/ (a higher layer)")
    fi
  done < <(grep -nE '^#include "[a-z_]+/' "$dir"*.{h,cpp} 2>/dev/null || true)
done

while read -r file; do
  grep -q '^#include "core/cpp_only.h"' "$file" ||
    problems+=("$file: does not include core/cpp_only.h (pure C++ files must prove that postgres.h stays out)")
done < <(find extension/src/core extension/src/rpc -name '*.cpp' | sort)

max_lines=500
while read -r file; do
  lines=$(wc -l <"$file")
  [ "$lines" -le "$max_lines" ] || problems+=("$file: $lines lines (at most $max_lines outside tests/)")
done < <(git ls-files -- '*.cpp' '*.h' '*.sql' '*.sh' '*.proto' ':!tests/' ':!docs/')

if [ ${#problems[@]} -gt 0 ]; then
  printf 'layout_check: %s\n' "${problems[@]}"
  exit 1
fi
echo "layout_check: the agent's layers include only downwards; core/ and rpc/ include core/cpp_only.h; no file outside tests/ is over $max_lines lines"
