// Restore point naming: deterministic, unique per upgrade and cluster, never from the clock.
#pragma once

#include <cstdint>
#include <string>

namespace safe_upgrade {

// "su_<upgrade id>_<low 32 bits of the system identifier, hex>", at most 63 bytes.
std::string RestorePointName(int64_t upgrade_id, uint64_t system_identifier);

// Compares WAL segment file names of one timeline ("000000010000000000000003"): true when
// archived is at or past needed. Names may carry suffixes (".partial", ".00000028.backup").
bool SegmentArchived(const std::string& last_archived, const std::string& needed);

}  // namespace safe_upgrade
