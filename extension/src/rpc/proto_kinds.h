// JobKind and JobFailureKind (core/job_kinds.h) to and from their wire enums in the agent's API,
// for both sides of it: the agent and the worker's client. Never include postgres.h next to it.
#pragma once

#include <optional>

#include "core/job_kinds.h"
#include "safe_upgrade/v1/agent.pb.h"

namespace safe_upgrade {

// On the wire a job kind is its enumerator plus one (0 is JOB_KIND_UNSPECIFIED), and a failure
// kind its enumerator; the asserts keep the two files in step.
static_assert(v1::JOB_KIND_SNAPSHOT == 1 + static_cast<int>(JobKind::kSnapshot) &&
              v1::JOB_KIND_DRY_RUN == 1 + static_cast<int>(JobKind::kDryRun) &&
              v1::JOB_KIND_ROLLBACK_TARGET == 1 + static_cast<int>(JobKind::kRollbackTarget) &&
              v1::JOB_KIND_APPLY == 1 + static_cast<int>(JobKind::kApply) &&
              v1::JOB_KIND_VERIFY == 1 + static_cast<int>(JobKind::kVerify) &&
              v1::JOB_KIND_ROLLBACK == 1 + static_cast<int>(JobKind::kRollback) &&
              v1::JOB_KIND_RESYNC_STANDBY == 1 + static_cast<int>(JobKind::kResyncStandby) &&
              v1::JobKind_MAX == 7);
static_assert(v1::FAILURE_KIND_NONE == static_cast<int>(JobFailureKind::kNone) &&
              v1::FAILURE_KIND_FAILED == static_cast<int>(JobFailureKind::kFailed) &&
              v1::FAILURE_KIND_CHECKS_FAILED == static_cast<int>(JobFailureKind::kChecksFailed) &&
              v1::FAILURE_KIND_COULD_NOT_RUN == static_cast<int>(JobFailureKind::kCouldNotRun) &&
              v1::FAILURE_KIND_REFUSED == static_cast<int>(JobFailureKind::kRefused) &&
              v1::FailureKind_MAX == 4);

inline v1::JobKind ToProto(JobKind kind) { return static_cast<v1::JobKind>(1 + static_cast<int>(kind)); }

// std::nullopt for JOB_KIND_UNSPECIFIED and for values this build does not know (proto3 enums
// are open: a newer peer's kinds arrive as plain numbers).
inline std::optional<JobKind> FromProto(v1::JobKind kind) {
  if (kind < 1 || kind > v1::JobKind_MAX) return std::nullopt;
  return static_cast<JobKind>(kind - 1);
}

inline v1::FailureKind ToProto(JobFailureKind kind) { return static_cast<v1::FailureKind>(kind); }

// A value this build does not know is a failure of the plainest kind.
inline JobFailureKind FromProto(v1::FailureKind kind) {
  if (kind < 0 || kind > v1::FailureKind_MAX) return JobFailureKind::kFailed;
  return static_cast<JobFailureKind>(kind);
}

}  // namespace safe_upgrade
