// The agent's jobs, as both sides of the agent's API name them: the kinds of job the worker starts
// (one per job-following state of the state table) and the kinds of failure a job reports. Pure
// C++: the extension's core, its agent client and the agent all use it.
#pragma once

#include <optional>
#include <string_view>

namespace safe_upgrade {

enum class JobKind {
  kSnapshot,        // a verified base backup of production
  kDryRun,          // the upgrade and the health checks on a clone of the snapshot
  kRollbackTarget,  // the parked copy a fast rollback swaps in
  kApply,           // ALTER EXTENSION ... UPDATE on production
  kVerify,          // the health checks on production
  kRollback,        // the point-in-time rollback to the restore point
  // A standby agent's job, which the primary's agent (never the worker) starts: after the
  // primary's rollback, rewind (or re-clone) the standby and have it stream on the new timeline.
  kResyncStandby,
};

// The kinds the worker starts on the primary's agent, one per job-following state.
inline constexpr JobKind kAllJobKinds[] = {JobKind::kSnapshot, JobKind::kDryRun, JobKind::kRollbackTarget,
                                           JobKind::kApply,    JobKind::kVerify, JobKind::kRollback};
// The kinds a standby's agent runs for the primary's agent.
inline constexpr JobKind kStandbyJobKinds[] = {JobKind::kResyncStandby};

// The name in job ids ("<name>-<upgrade id>"), logs and events.
constexpr std::string_view JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kSnapshot:
      return "snapshot";
    case JobKind::kDryRun:
      return "dryrun";
    case JobKind::kRollbackTarget:
      return "rollback_target";
    case JobKind::kApply:
      return "apply";
    case JobKind::kVerify:
      return "verify";
    case JobKind::kRollback:
      return "rollback";
    case JobKind::kResyncStandby:
      return "resync";
  }
  return "";
}

constexpr std::optional<JobKind> ParseJobKind(std::string_view name) {
  for (JobKind kind : kAllJobKinds)
    if (JobKindName(kind) == name) return kind;
  for (JobKind kind : kStandbyJobKinds)
    if (JobKindName(kind) == name) return kind;
  return std::nullopt;
}

// How a failed job failed, which decides the upgrade's next state (the state table).
enum class JobFailureKind {
  kNone,          // the job did not fail
  kFailed,        // the step failed (the job's error says why)
  kChecksFailed,  // a health check failed (or the extension is not at its target version)
  kCouldNotRun,   // the step could not run at all (server restarting, connection refused): retry
  kRefused,       // refused before it began: nothing was changed
};

}  // namespace safe_upgrade
