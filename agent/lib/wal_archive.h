// WAL archive commands: `safe-upgrade-agent wal-push %p` (archive_command) and
// `wal-fetch %f %p` (restore_command), storing segments in the configured archive directory.
#pragma once

#include <string>

#include "config.h"

namespace safe_upgrade {

// Returns a process exit code (0 on success) and prints the reason on stderr otherwise.
int WalPush(const AgentConfig& config, const std::string& source_path);
int WalFetch(const AgentConfig& config, const std::string& file_name, const std::string& dest_path);

}  // namespace safe_upgrade
