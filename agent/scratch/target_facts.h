// What a rollback target's own files say about it: its control file and its new timeline's
// history file, never the server's log, whose messages follow lc_messages.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/config.h"
#include "base/journal.h"
#include "postgres/cluster.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {

// A clean stop in recovery: a target stopped before its restore point, or one an earlier agent
// parked with recovery_target_action = shutdown.
bool ShutDownInRecovery(const ClusterFacts& facts);
// Promoted and still running as an (isolated) primary on a timeline after the one it replayed.
bool Promoted(const ClusterFacts& facts, uint32_t replayed_timeline);
// Replayed its base backup to the end and still recovering, waiting in the archive for more WAL.
bool Consistent(const ClusterFacts& facts);
// pg_controldata of dir; nullopt (with the reason) when it fails.
std::optional<ClusterFacts> ControlFacts(const AgentConfig& config, const std::string& dir,
                                         std::string& reason);
// Parked exactly at the restore point: promoted there and shut down cleanly, its history file
// branching off the restore point's timeline at the restore point's LSN, and no different history
// file of that name in the backend's archive. Otherwise false, with the reason.
bool ParkedAt(const AgentConfig& config, const RollbackTargetRecord& target, const RestorePointAt& rp,
              std::string& reason, nlohmann::json& facts_out);
// Marks the new timeline's history file for archiving: the target ran with archive_mode off, so
// its promotion did not; production's archiver, once it runs on these files, will.
void MarkHistoryForArchiving(const std::string& data_dir, uint32_t timeline);

}  // namespace safe_upgrade
