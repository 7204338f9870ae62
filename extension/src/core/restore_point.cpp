// Restore point naming and WAL segment comparison.
#include "core/restore_point.h"

#include <cstdio>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {

std::string RestorePointName(int64_t upgrade_id, uint64_t system_identifier) {
  char buf[64];
  snprintf(buf, sizeof buf, "su_%lld_%08x", static_cast<long long>(upgrade_id),
           static_cast<unsigned>(system_identifier & 0xffffffffu));
  return buf;
}

bool SegmentArchived(const std::string& last_archived, const std::string& needed) {
  if (last_archived.size() < 24 || needed.size() < 24) return false;
  std::string a = last_archived.substr(0, 24), n = needed.substr(0, 24);
  for (char c : a)
    if (!isxdigit(static_cast<unsigned char>(c))) return false;
  // Same timeline prefix required; a later timeline's file means the server moved on.
  if (a.substr(0, 8) > n.substr(0, 8)) return true;
  if (a.substr(0, 8) < n.substr(0, 8)) return false;
  // "<segment>.<offset>.backup" or ".partial" for the very segment we need does not prove the
  // segment itself was archived.
  if (a == n && last_archived.size() > 24) return false;
  return a >= n;
}

}  // namespace safe_upgrade
