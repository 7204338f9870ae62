// Unit tests of the extension's pure C++ core: restore point names, WAL segment comparison and
// the state vocabulary. No server needed.
#include <gtest/gtest.h>

#include "core/restore_point.h"
#include "core/states.h"

namespace safe_upgrade {
namespace {

TEST(RestorePointName, is_deterministic_and_unique_per_upgrade) {
  EXPECT_EQ(RestorePointName(42, 0x1234567890abcdefULL), RestorePointName(42, 0x1234567890abcdefULL));
  EXPECT_NE(RestorePointName(42, 0x1234567890abcdefULL), RestorePointName(43, 0x1234567890abcdefULL));
  EXPECT_NE(RestorePointName(42, 0x1234567890abcdefULL), RestorePointName(42, 0x1234567890abcdeeULL));
  EXPECT_EQ(RestorePointName(42, 0x1234567890abcdefULL), "su_42_90abcdef");
}

TEST(RestorePointName, fits_in_63_bytes_for_the_largest_id) {
  EXPECT_LE(RestorePointName(INT64_MAX, UINT64_MAX).size(), 63u);
}

TEST(SegmentArchived, compares_segments_of_one_timeline) {
  EXPECT_TRUE(SegmentArchived("000000010000000000000005", "000000010000000000000005"));
  EXPECT_TRUE(SegmentArchived("000000010000000000000006", "000000010000000000000005"));
  EXPECT_FALSE(SegmentArchived("000000010000000000000004", "000000010000000000000005"));
  EXPECT_TRUE(SegmentArchived("000000010000000100000000", "0000000100000000000000FF"));
}

TEST(SegmentArchived, a_backup_history_file_of_the_needed_segment_is_not_proof) {
  EXPECT_FALSE(SegmentArchived("000000010000000000000005.00000028.backup", "000000010000000000000005"));
  EXPECT_TRUE(SegmentArchived("000000010000000000000006.00000028.backup", "000000010000000000000005"));
}

TEST(SegmentArchived, rejects_garbage_and_empty_names) {
  EXPECT_FALSE(SegmentArchived("", "000000010000000000000005"));
  EXPECT_FALSE(SegmentArchived("00000002.history", "000000010000000000000005"));
  EXPECT_FALSE(SegmentArchived("zzzzzzzzzzzzzzzzzzzzzzzz", "000000010000000000000005"));
}

TEST(States, terminal_and_in_flight_states_partition_the_vocabulary) {
  for (const char* s : {"queued", "snapshotting", "dry_running", "awaiting_approval", "scheduled", "applying",
                        "verifying", "rolling_back"}) {
    EXPECT_TRUE(IsInFlightState(s)) << s;
    EXPECT_FALSE(IsTerminalState(s)) << s;
  }
  for (const char* s :
       {"succeeded", "validated", "blocked", "failed", "rolled_back", "rollback_failed", "cancelled"}) {
    EXPECT_TRUE(IsTerminalState(s)) << s;
    EXPECT_FALSE(IsInFlightState(s)) << s;
  }
  EXPECT_FALSE(IsTerminalState("bogus"));
  EXPECT_FALSE(IsInFlightState("bogus"));
}

TEST(States, only_apply_verify_and_rollback_may_have_touched_production) {
  EXPECT_TRUE(ProductionMayBeTouched("applying"));
  EXPECT_TRUE(ProductionMayBeTouched("verifying"));
  EXPECT_TRUE(ProductionMayBeTouched("rolling_back"));
  EXPECT_FALSE(ProductionMayBeTouched("dry_running"));
  EXPECT_FALSE(ProductionMayBeTouched("scheduled"));
}

TEST(States, job_following_states_map_to_agent_jobs) {
  EXPECT_EQ(JobKindForState("snapshotting"), "snapshot");
  EXPECT_EQ(JobKindForState("dry_running"), "dryrun");
  EXPECT_EQ(JobKindForState("applying"), "apply");
  EXPECT_EQ(JobKindForState("verifying"), "verify");
  EXPECT_EQ(JobKindForState("rolling_back"), "rollback");
  EXPECT_EQ(JobKindForState("queued"), "");
}

}  // namespace
}  // namespace safe_upgrade
