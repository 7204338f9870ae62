// Removing dry-run clones: one (its server stopped, its directories removed, refusing anything
// that is not one of our scratch locations), and at agent start every clone an interrupted dry run
// left behind.
#pragma once

#include <cstdint>
#include <string>

#include "base/config.h"
#include "base/journal.h"

namespace safe_upgrade {

// A clone's directory is <work_dir>/clones/dryrun-<upgrade id>.
constexpr const char* kClonePrefix = "dryrun-";
// A clone whose socket path would be too long for sun_path gets a directory under /tmp.
constexpr const char* kTmpSocketPrefix = "/tmp/su-clone-";

// The path with "." and ".." resolved lexically, and whether path lies strictly inside dir
// (lexically; both absolute): what a clone may remove, and a snapshot's tablespace may point to.
std::string NormalPath(const std::string& path);
bool PathInside(const std::string& path, const std::string& dir);

// Stops the clone's server and removes dir and socket_dir; logs and does nothing when dir is not
// a clone under config's clones directory.
void DestroyClone(int64_t upgrade_id, const AgentConfig& config, const std::string& dir,
                  const std::string& socket_dir);

// At agent start: stops and removes every clone the journal lists (and any leftover directory
// under <work_dir>/clones), since no job survives an agent restart.
void RemoveOrphanedClones(const AgentConfig& config, Journal& journal);

}  // namespace safe_upgrade
