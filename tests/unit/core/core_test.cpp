// Unit tests of the extension's pure C++ core: restore point names and WAL segment comparison
// (the state table and the scheduler's decisions: state_table_test.cpp). No server needed.
#include <gtest/gtest.h>

#include "core/restore_point.h"

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

}  // namespace
}  // namespace safe_upgrade
