// Unit tests of the rollback's step table (no server needed): every step is named once, in the
// order earlier agents journaled them, and a journaled name that is not in the table is an error,
// never skipped.
#include "jobs/rollback.h"

#include <gtest/gtest.h>

#include <set>

namespace safe_upgrade {
namespace {

TEST(RollbackSteps, every_step_is_named_once) {
  std::set<std::string> seen;
  for (const auto& step : RollbackStepTable()) {
    EXPECT_FALSE(std::string(step.name).empty());
    EXPECT_TRUE(seen.insert(step.name).second) << step.name << " is in the table twice";
    EXPECT_NE(std::string(step.rerun_safe_because), "") << step.name;
  }
}

TEST(RollbackSteps, the_names_are_those_earlier_agents_journaled_in_the_same_order) {
  // Journals written before the table existed name these; GetUpgradeJournal reports them. A step
  // added later (standbys_resynced) comes after the steps it follows, so that such a journal
  // resumes through it.
  EXPECT_EQ(RollbackSteps(),
            (std::vector<std::string>{"prechecked", "target_checked", "window_recorded", "stopped",
                                      "moved_aside", "restored", "configured", "promoted", "verified",
                                      "settings_removed", "standbys_resynced", "outcome_written", "done"}));
}

TEST(RollbackSteps, stages_come_in_order_and_only_the_end_record_has_no_body) {
  const auto& steps = RollbackStepTable();
  for (size_t i = 0; i < steps.size(); ++i) {
    if (i > 0) EXPECT_LE(steps[i - 1].stage, steps[i].stage) << steps[i].name;
    EXPECT_EQ(steps[i].run == nullptr, steps[i].stage == RollbackStage::kEnd) << steps[i].name;
  }
  EXPECT_EQ(steps.back().stage, RollbackStage::kEnd);
}

TEST(RollbackResume, a_journaled_step_is_resumed_after) {
  RollbackContext rc;
  rc.dir_suffix = "7-20261201T210402Z";
  EXPECT_EQ(RollbackResumeAfter("", rc), -1);
  const auto names = RollbackSteps();
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(RollbackResumeAfter(names[i], rc), static_cast<int>(i));
}

TEST(RollbackResume, a_window_journaled_before_the_target_check_starts_over) {
  // Agents that chose no directory suffix recorded the window before checking the target.
  RollbackContext old;
  EXPECT_EQ(RollbackResumeAfter("window_recorded", old), -1);
  EXPECT_EQ(RollbackResumeAfter("stopped", old), 3);
}

TEST(RollbackResume, an_unknown_step_is_an_error_not_skipped) {
  RollbackContext rc;
  try {
    RollbackResumeAfter("moved_asid", rc);
    ADD_FAILURE() << "an unknown step was accepted";
  } catch (const UnknownRollbackStep& e) {
    EXPECT_EQ(e.step(), "moved_asid");
    EXPECT_NE(std::string(e.what()).find("\"moved_asid\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace safe_upgrade
