// Unit tests of the agent's job registry (agent/jobs/registry.cpp) and of the job kinds on the
// wire: every kind has one row, a job id names its kind, and refusals say how the step is reached.
#include "jobs/registry.h"

#include <gtest/gtest.h>

#include <set>

#include "core/state_table.h"
#include "rpc/proto_kinds.h"

namespace safe_upgrade {
namespace {

TEST(JobRegistry, every_kind_has_one_row_with_a_body_and_a_state_of_its_own) {
  std::set<std::string> states;
  for (JobKind kind : kAllJobKinds) {
    const JobSpec& spec = SpecOf(kind);
    EXPECT_EQ(spec.kind, kind);
    EXPECT_NE(spec.body, nullptr) << JobKindName(kind);
    const std::string state(StateName(StateForJob(kind)));
    EXPECT_TRUE(states.insert(state).second) << JobKindName(kind) << " shares state " << state;
  }
}

TEST(JobRegistry, a_refusal_names_the_state_and_how_the_step_is_reached) {
  const JobSpec& rollback = SpecOf(JobKind::kRollback);
  EXPECT_EQ(RefusalOf(rollback, 7, "rolling_back"), "");
  EXPECT_EQ(
      RefusalOf(rollback, 7, "succeeded"),
      "upgrade 7 is succeeded, not rolling_back; a rollback starts only through safe_upgrade.rollback(7) "
      "or a failed verification");
}

TEST(JobRegistry, job_ids_name_their_kind_and_parse_back) {
  for (JobKind kind : kAllJobKinds) {
    JobKind parsed;
    int64_t id = 0;
    ASSERT_TRUE(ParseJobId(JobId(kind, 42), parsed, id)) << JobId(kind, 42);
    EXPECT_EQ(parsed, kind);
    EXPECT_EQ(id, 42);
  }
  EXPECT_EQ(JobId(JobKind::kDryRun, 3), "dryrun-3");
}

TEST(JobKindsOnTheWire, every_kind_round_trips_and_unspecified_or_unknown_is_none) {
  for (JobKind kind : kAllJobKinds) EXPECT_EQ(FromProto(ToProto(kind)), kind) << JobKindName(kind);
  EXPECT_EQ(FromProto(v1::JOB_KIND_UNSPECIFIED), std::nullopt);
  EXPECT_EQ(FromProto(static_cast<v1::JobKind>(99)), std::nullopt);
  EXPECT_EQ(FromProto(static_cast<v1::JobKind>(-1)), std::nullopt);
}

TEST(JobKindsOnTheWire, failure_kinds_round_trip_and_an_unknown_one_is_a_plain_failure) {
  for (JobFailureKind kind : {JobFailureKind::kNone, JobFailureKind::kFailed, JobFailureKind::kChecksFailed,
                              JobFailureKind::kCouldNotRun, JobFailureKind::kRefused})
    EXPECT_EQ(FromProto(ToProto(kind)), kind);
  EXPECT_EQ(FromProto(static_cast<v1::FailureKind>(42)), JobFailureKind::kFailed);
}

TEST(JobFailure, is_a_plain_failure_unless_its_thrower_says_otherwise) {
  EXPECT_EQ(JobFailure("x").kind(), JobFailureKind::kFailed);
  EXPECT_EQ(JobFailure("x", {{"checks_failed", true}}, JobFailureKind::kChecksFailed).kind(),
            JobFailureKind::kChecksFailed);
}

}  // namespace
}  // namespace safe_upgrade
