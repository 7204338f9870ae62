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

// With the standby synchronous (synchronous_standby_names), the outcome's commit must not wait for
// the standby that is down.
class StandbyAgentKilledWhileResyncing : public ::testing::TestWithParam<bool> {};

TEST_P(StandbyAgentKilledWhileResyncing, the_rollback_ends_with_the_primary_up_and_the_standby_reported) {
  const bool synchronous = GetParam();
  RecordFault(std::string("a ") + (synchronous ? "synchronous " : "") +
                  "standby's agent SIGKILLed during its resync, right after it stopped the standby",
              "`rollback_failed` naming the standby (`unreachable`), the primary rolled back and serving, within "
              "a bounded wait");
  // The failpoint is in the standby agent's resync job only: the primary's agent never reaches it.
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "resync:after_stop"}}, .standbys = 1});
  c.ExpectCrashes();
  // Once the standby streams (the sandbox waits for it): from then on every commit waits for it.
  if (synchronous) {
    c.Exec("ALTER SYSTEM SET synchronous_standby_names = 'standby1'");
    c.Exec("SELECT pg_reload_conf()");
    ASSERT_TRUE(WaitUntil([&] {
      return c.Scalar("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'") == "sync";
    },
                          30s));
  }
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

INSTANTIATE_TEST_SUITE_P(Standbys, StandbyAgentKilledWhileResyncing, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "synchronous" : "asynchronous"; });

}  // namespace
}  // namespace safe_upgrade::testing
