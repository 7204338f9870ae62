// The recovery settings a rollback writes into a restored data directory's postgresql.auto.conf
// (restore_command through the agent's wal-fetch, the restore point as target, its timeline and
// the action at the target), kept between markers so that they can be rewritten or found again.
// Shared by the rollback and by the parked rollback target, which recovers with the same
// settings ahead of time.
#pragma once

#include <string>
#include <vector>

#include "base/config.h"

namespace safe_upgrade {

struct RecoveryTarget {
  std::string restore_point;  // recovery_target_name
  int timeline = 0;           // recovery_target_timeline
  std::string action = "promote";
};

// Rewrites our block at the end of data_dir/postgresql.auto.conf (any older block is replaced).
void WriteRecoveryBlock(const AgentConfig& config, const std::string& data_dir, const RecoveryTarget& target);
// The names WriteRecoveryBlock sets, for ALTER SYSTEM RESET after promotion.
const std::vector<std::string>& RecoverySettingNames();

}  // namespace safe_upgrade
