// Fault injection on a standby's agent during the re-sync that follows a rollback of the primary:
// the primary stays rolled back and up, the rollback ends, and the standby's outcome says what
// became of it; the primary's agent never waits for a job that no longer exists.
#include <gtest/gtest.h>

#include "fault_report.h"
#include "fixtures.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

TEST(StandbyAgentKilledWhileResyncing, the_rollback_ends_with_the_primary_up_and_the_standby_reported) {
  RecordFault("a standby's agent SIGKILLed during its resync, right after it stopped the standby",
              "`rollback_failed` naming the standby (`unreachable`), the primary rolled back and serving, within "
              "a bounded wait");
  // The failpoint is in the standby agent's resync job only: the primary's agent never reaches it.
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "resync:after_stop"}}, .standbys = 1});
  c.ExpectCrashes();
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c);
  ASSERT_TRUE(WriteMarkersAroundDoomedApply(c, h, c.Connect()));
  auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rollback_failed") << c.Events(h.id);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 300s);
  ExpectOnlyRowsBeforeRestorePoint(c);
  EXPECT_EQ(c.Scalar("SELECT outcome FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = $1::bigint",
                     {std::to_string(h.id)}),
            "unreachable");
  std::string error = c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(h.id)});
  EXPECT_NE(error.find("stopped answering during the resync"), std::string::npos) << error;
}

}  // namespace
}  // namespace safe_upgrade::testing
