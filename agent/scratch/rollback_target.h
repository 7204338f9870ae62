// The parked rollback target: the fast rollback path.
//
// Before the restore point is created, the agent copies the upgrade's snapshot next to the data
// directory (<data_directory>.ready-<id>, on the same filesystem so that the swap is a rename)
// and starts it as an isolated archive-following standby: its own port and socket, no TCP, no
// archiving, no streaming from production, hot_standby off, the scheduler off. Its recovery
// target is the upgrade's restore point (the name is known in advance) with
// recovery_target_action = 'promote', so once production has archived the restore point the copy
// replays up to it and promotes there, on a new timeline, paying its end-of-recovery checkpoint
// while production still serves. Before production is touched, the apply waits for that promotion
// and stops the copy cleanly: parked. A rollback then stops production, swaps the directories and
// starts a server that was shut down cleanly at the restore point: nothing to replay, nothing to
// promote, so the downtime grows neither with the database size nor with what production wrote
// since the snapshot.
//
// The target costs one more copy of the cluster on the data directory's filesystem while the
// upgrade is applied and verified; it is removed once the upgrade succeeds or ends otherwise.
// When the disk is short (rollback_target = 'auto'), or on request ('cold'), the rollback
// restores the snapshot instead (the cold path), which is also the fallback whenever the target
// is not parked when it is needed.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

// <data_directory>.ready-<id>
std::string RollbackTargetDir(const AgentConfig& config, int64_t upgrade_id);

// Job "prepare_rollback": copies and starts the target; returns {"mode": "ready", ...} or, when
// the option is "cold" or ("auto" and) the target cannot be had, {"mode": "cold", "reason": ...}.
nlohmann::json RunPrepareRollbackJob(JobContext& ctx);

struct ParkedState {
  bool parked = false;
  std::string reason;                               // why not, in words
  nlohmann::json facts = nlohmann::json::object();  // what its control file said
};

// The restore point as the catalog (safe_upgrade.restore_points) records it.
struct RestorePointAt {
  std::string name;
  std::string lsn;  // pg_create_restore_point's result: the end of its record
  int timeline = 0;
};

// Waits (at most timeout) until the upgrade's journaled target has promoted, stops it cleanly,
// then tells whether it is parked exactly at rp: shut down, on a new timeline whose history file
// says it branched off rp's timeline at rp's LSN (from pg_controldata and the history file, never
// from the log). A parked target's history file is marked for archiving. Production is never
// touched.
ParkedState ParkRollbackTarget(const AgentConfig& config, const RollbackTargetRecord& target,
                               const RestorePointAt& rp, std::chrono::seconds timeout);

// For the apply, before production is touched: parks the upgrade's target (if it has one) and
// journals it as "parked". A target that cannot be parked is discarded, with a warning under
// rollback_target 'auto' (a rollback restores the snapshot instead), or a refusal (JobFailure)
// under 'ready'.
void ParkBeforeApply(JobContext& ctx, const RestorePointAt& rp, const std::string& rollback_target_option);

// Stops and removes the upgrade's target (if any, and not swapped in) and its journal entry.
void DiscardRollbackTarget(const AgentConfig& config, Journal& journal, int64_t upgrade_id,
                           const std::string& why);

// DiscardRollbackTarget from inside a job, once the target is no longer needed: a failure to
// remove it is only a warning event of that job (the next job start tries again).
void ReleaseRollbackTarget(JobContext& ctx, const std::string& phase, const std::string& why);

// Discards the targets of every upgrade not in keep (the upgrades that may still roll back).
void DiscardRollbackTargetsExcept(const AgentConfig& config, Journal& journal, const std::set<int64_t>& keep);

// The upgrades whose target must be kept: states scheduled, applying, verifying, rolling_back.
std::set<int64_t> UpgradesThatMayRollBack(PgConn& conn);

}  // namespace safe_upgrade
