// The bodies of the agent's jobs (registry.h says which kind runs which, and when). Each reads what
// it needs about the upgrade from the catalog of the cluster it serves (never from the request)
// and returns a JSON result, or throws JobFailure with the kind of failure.
#pragma once

#include <nlohmann/json.hpp>

#include "base/job.h"

namespace safe_upgrade {

// pg_basebackup + pg_verifybackup into <snapshot_dir>/<snapshot id>; returns the snapshot metadata.
nlohmann::json RunSnapshotJob(JobContext& ctx);
// Clone of the snapshot, upgrade + health checks in it, teardown; returns the dry-run report.
nlohmann::json RunDryRunJob(JobContext& ctx);
// The parked rollback target (rollback_target.h).
nlohmann::json RunPrepareRollbackJob(JobContext& ctx);
// ALTER EXTENSION ... UPDATE on production under lock_timeout with retries.
nlohmann::json RunApplyJob(JobContext& ctx);
// Health checks on production.
nlohmann::json RunVerifyJob(JobContext& ctx);
// Point-in-time rollback to the upgrade's restore point.
nlohmann::json RunRollbackJob(JobContext& ctx);

// On a standby's agent: rewind (or re-clone) the standby onto the primary's new timeline.
nlohmann::json RunResyncStandbyJob(JobContext& ctx);

// At agent start: remove orphaned clones, resume interrupted rollbacks.
void RecoverOnStartup(JobManager& jobs, Journal& journal, const AgentConfig& config);

}  // namespace safe_upgrade
