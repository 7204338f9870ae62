// Unit tests of reading a timeline history file as PostgreSQL 15 writes it at a promotion: how
// the agent tells where a parked rollback target branched off.
#include <gtest/gtest.h>

#include "postgres/cluster.h"

namespace safe_upgrade {
namespace {

TEST(TimelineHistory, the_last_switch_is_the_one_that_created_the_timeline) {
  auto sw = LastTimelineSwitch(
      "1\t0/3000160\tat restore point \"su_1_ab\"\n"
      "\n"
      "2\t0/5000000\tno recovery target specified\n"
      "3\t0/6025988\tat restore point \"su_7_cd\"\n");
  ASSERT_TRUE(sw);
  EXPECT_EQ(sw->parent, 3u);
  EXPECT_EQ(sw->lsn, "0/6025988");
  EXPECT_EQ(sw->reason, "at restore point \"su_7_cd\"");
}

TEST(TimelineHistory, comments_and_blank_lines_are_not_switches) {
  EXPECT_FALSE(LastTimelineSwitch(""));
  EXPECT_FALSE(LastTimelineSwitch("# a comment\n\n   \n"));
  auto sw = LastTimelineSwitch("# header\n1\t0/3025988\tat restore point \"rp\"\n# trailing\n");
  ASSERT_TRUE(sw);
  EXPECT_EQ(sw->parent, 1u);
  EXPECT_EQ(sw->lsn, "0/3025988");
}

TEST(TimelineHistory, file_names_are_eight_upper_case_hex_digits) {
  EXPECT_EQ(TimelineHistoryFileName(2), "00000002.history");
  EXPECT_EQ(TimelineHistoryFileName(0x1A), "0000001A.history");
}

}  // namespace
}  // namespace safe_upgrade
