// The recovery settings a rollback writes into a restored data directory's postgresql.auto.conf
// (restore_command through the agent's wal-fetch, the restore point as target, its timeline and
// the action at the target), kept between markers so that they can be rewritten or found again.
// Shared by the rollback and by the parked rollback target, which recovers with the same
// settings ahead of time.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/config.h"

namespace safe_upgrade {

struct RecoveryTarget {
  std::string restore_point;  // recovery_target_name
  int timeline = 0;           // recovery_target_timeline
  std::string action = "promote";
};

// The backend's restore_command for a server recovering in data_dir: the agent's wal-fetch, or
// pgBackRest's archive-get.
std::string RestoreCommandFor(const AgentConfig& config, const std::string& data_dir);
// A file (a timeline history file) as the backend's WAL archive holds it; nullopt when absent.
std::optional<std::string> ArchivedFileText(const AgentConfig& config, const std::string& name);
// Rewrites our block at the end of data_dir/postgresql.auto.conf (any older block is replaced).
void WriteRecoveryBlock(const AgentConfig& config, const std::string& data_dir, const RecoveryTarget& target);
// The names WriteRecoveryBlock sets, for ALTER SYSTEM RESET after promotion.
const std::vector<std::string>& RecoverySettingNames();

}  // namespace safe_upgrade
