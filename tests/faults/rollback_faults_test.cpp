// Fault injection around rollback and apply: the agent SIGKILLed after each journaled rollback
// step, the postmaster killed while verifying, and a WAL segment missing at rollback. Each case
// asserts the final state and that no data was lost.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../integration/agent_job_helpers.h"
#include "base/fs_util.h"
#include "fault_report.h"
#include "fixtures.h"
#include "jobs/rollback.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;


// Begins an upgrade that passes its dry run and then fails verification on production: the
// poison row is written after the snapshot, while the upgrade waits for approval.
int64_t BeginDoomedUpgrade(const TestCluster& c) {
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"require_approval": true})");
  EXPECT_TRUE(c.WaitForState(id, "awaiting_approval", 300s)) << c.Events(id);
  c.Exec("INSERT INTO marks SELECT 1, g FROM generate_series(1, 50) g; INSERT INTO poison VALUES (1000);");
  c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(id)});
  return id;
}

// Prepares the fixture, begins an upgrade with begin and waits until the agent's failpoint has
// killed it. Returns the upgrade id.
int64_t UntilTheFailpointKillsTheAgent(TestCluster& c, int64_t (*begin)(const TestCluster&)) {
  c.ExpectCrashes();
  PrepareRollbackFixture(c);
  int64_t id = begin(c);
  EXPECT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 600s)) << "the failpoint never fired";
  return id;
}

class AgentKilledDuringRollback : public ::testing::TestWithParam<std::string> {};

TEST_P(AgentKilledDuringRollback, resumes_after_restart_and_ends_rolled_back_with_data_intact) {
  const std::string step = GetParam();
  RecordFault("agent SIGKILLed right after the rollback journaled step `" + step + "`, then restarted",
              "`rolled_back`; old version back; rows before the restore point intact; failed data directory kept");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "rollback:after:" + step}}});
  c.ExpectCrashes();
  PrepareRollbackFixture(c);
  int64_t id = BeginDoomedUpgrade(c);
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 600s)) << "the failpoint never fired";
  EXPECT_NE(c.AgentLog().find("failpoint rollback:after:" + step), std::string::npos) << c.AgentLog();
  c.StartAgent();  // without the failpoint
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rolled_back") << c.Events(id) << c.AgentLog();
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 1"), "50");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM poison"), "1");
  std::string aside = RollbackReport(c, id).value("failed_data_directory", "");
  EXPECT_EQ(aside.rfind(c.info().data_dir + ".failed-" + std::to_string(id) + "-", 0), 0u) << aside;
  EXPECT_TRUE(IsDirectory(aside)) << aside;
}

// Every step of the rollback's table that has a body (the end record "done" is written last).
std::vector<std::string> StepsToKillAfter() {
  std::vector<std::string> out;
  for (const auto& step : RollbackStepTable())
    if (step.run) out.push_back(step.name);
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryJournaledStep, AgentKilledDuringRollback,
                         ::testing::ValuesIn(StepsToKillAfter()),
                         [](const auto& info) { return info.param; });

TEST(AgentRestartedAtAnUnknownRollbackStep, it_ends_rollback_failed_naming_the_step_and_is_not_skipped) {
  RecordFault(
      "agent SIGKILLed after the rollback journaled `prechecked`; the journal's step then renamed to one "
      "no agent has, and the agent restarted",
      "`rollback_failed` naming the step and where production is; production untouched and running");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "rollback:after:prechecked"}}});
  int64_t id = UntilTheFailpointKillsTheAgent(c, BeginDoomedUpgrade);
  ASSERT_FALSE(::testing::Test::HasFailure());
  std::string path = JoinPath(c.info().agent_config.JournalDir(), "upgrade-" + std::to_string(id) + ".json");
  auto journal = ReadJournal(c, id);
  ASSERT_EQ(journal.value("rollback_step", ""), "prechecked") << journal.dump();
  journal["rollback_step"] = "prechecked_by_a_newer_agent";
  AtomicWriteFile(path, journal.dump(2), 0600);
  ChownTree(path, c.info().os_user);
  c.StartAgent();  // without the failpoint
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rollback_failed") << c.Events(id) << c.AgentLog();
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("\"prechecked_by_a_newer_agent\""), std::string::npos) << error;
  EXPECT_NE(error.find("the server is running"), std::string::npos) << error;
  EXPECT_EQ(ReadJournal(c, id).value("rollback", ""), "rollback_failed");
  // Nothing was stopped or moved: the upgrade is still applied.
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "2.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 1"), "50");
}

TEST(AgentKilledWhilePreparingTheRollbackTarget, the_target_is_prepared_again_and_the_rollback_uses_it) {
  RecordFault("agent SIGKILLed right after copying the rollback target, then restarted",
              "the target is prepared again; `rolled_back` through the parked target; no target left behind");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "rollback_target:after:copy"}}});
  c.ExpectCrashes();
  PrepareRollbackFixture(c);
  int64_t id = BeginDoomedUpgrade(c);
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 600s)) << "the failpoint never fired";
  c.StartAgent();  // without the failpoint
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rolled_back") << c.Events(id) << c.AgentLog();
  std::string events = c.Events(id);
  EXPECT_NE(events.find("the agent restarted during scheduled"), std::string::npos) << events;
  EXPECT_NE(events.find("is parked at restore point"), std::string::npos) << events;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 1"), "50");
  EXPECT_FALSE(PathExists(c.info().data_dir + ".ready-" + std::to_string(id)));
}

TEST(PostmasterKilled, killed_while_verifying_the_upgrade_is_not_applied_twice) {
  RecordFault("postmaster SIGKILLed while the upgrade is `verifying`, then restarted",
              "`succeeded`; the upgrade script ran exactly once");
  TestCluster c;
  c.ExpectCrashes();
  c.Exec("CREATE EXTENSION su_rollback_fixture VERSION '1.0'");
  // A slow check keeps the upgrade in verifying long enough to kill the postmaster there.
  c.Scalar("SELECT safe_upgrade.add_health_check('slow', 'SELECT pg_sleep(3) IS NOT NULL', 'su_rollback_fixture')");
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0");
  ASSERT_TRUE(c.WaitForState(id, "verifying", 600s)) << c.Events(id);
  c.KillPostmaster();
  c.StartServer();
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "succeeded") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_rb_applied"), "1") << "the upgrade script ran more than once";
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "2.0");
}

// Runs an upgrade whose rollback cannot recover: the WAL segment holding its restore point is
// taken out of the archive while the apply waits for a lock. Returns the upgrade id.
int64_t BeginUpgradeWhoseRecoveryFails(const TestCluster& c) {
  // The cold path: a parked target may already hold the segment, so it is not asked for here.
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0",
                              R"({"require_approval": true, "lock_timeout": "500ms", "max_lock_retries": 100, )"
                              R"("rollback_target": "cold"})");
  EXPECT_TRUE(c.WaitForState(id, "awaiting_approval", 300s)) << c.Events(id);
  c.Exec("INSERT INTO poison VALUES (1000)");
  auto blocker = c.Connect();
  blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(id)});
  EXPECT_TRUE(c.WaitForState(id, "applying", 300s)) << c.Events(id);
  // Once the apply waits for its lock it has proven the archive complete (earlier, the missing
  // segment would fail the upgrade before production is touched).
  EXPECT_TRUE(
      WaitUntil([&] { return c.Events(id).find("waits for a lock held by pid") != std::string::npos; }, 120s))
      << c.Events(id);
  std::string segment = c.Scalar("SELECT wal_segment FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                                 {std::to_string(id)});
  std::string archived = JoinPath(c.info().agent_config.wal_archive_dir, segment);
  EXPECT_TRUE(PathExists(archived)) << archived;
  std::filesystem::rename(archived, JoinPath(c.root(), segment + ".removed-by-test"));
  blocker->ExecScript("COMMIT");
  return id;
}

// The original data directory is back and serving the upgraded version; nothing deleted.
void ExpectOriginalRunningAfterFailedRecovery(const TestCluster& c, int64_t id) {
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "2.0");
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  std::string failed_restore = RollbackReport(c, id).value("failed_restore", "");
  EXPECT_EQ(failed_restore.rfind(c.info().data_dir + ".rollback-failed-" + std::to_string(id) + "-", 0), 0u)
      << failed_restore;
  EXPECT_TRUE(IsDirectory(failed_restore)) << failed_restore;
  std::string error = c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("recovery"), std::string::npos) << error;
}

TEST(MissingWal, a_segment_missing_at_rollback_ends_rollback_failed_with_the_original_running) {
  RecordFault("the WAL segment holding the restore point is removed from the archive before the rollback",
              "`rollback_failed`; the original data directory is running again; the failed restore is kept");
  TestCluster c;
  c.ExpectCrashes();
  PrepareRollbackFixture(c);
  int64_t id = BeginUpgradeWhoseRecoveryFails(c);
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rollback_failed") << c.Events(id);
  ExpectOriginalRunningAfterFailedRecovery(c, id);
}

TEST(MissingWal, with_a_tablespace_and_a_linked_pg_wal_those_are_put_back_too_and_the_restored_ones_kept) {
  RecordFault(
      "the restore point's WAL segment is missing at the rollback of a cluster with a tablespace and "
      "pg_wal linked to another directory",
      "`rollback_failed`; the original data directory, tablespace and WAL directory are back, linked and "
      "running; the failed restore's tablespace and WAL are kept, linked from it");
  TestCluster c;
  c.ExpectCrashes();
  OutsideDirs o = MoveWalAndCreateTablespace(c);
  PrepareRollbackFixture(c);
  c.Exec(
      "ALTER TABLE marks SET TABLESPACE ts1; INSERT INTO marks SELECT 1, g FROM generate_series(1, 10) g;");
  int64_t id = BeginUpgradeWhoseRecoveryFails(c);
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rollback_failed") << c.Events(id);
  ExpectOriginalRunningAfterFailedRecovery(c, id);
  EXPECT_EQ(std::filesystem::read_symlink(JoinPath(c.info().data_dir, "pg_tblspc/" + o.ts_oid)).string(),
            o.ts_location);
  EXPECT_EQ(std::filesystem::read_symlink(JoinPath(c.info().data_dir, "pg_wal")).string(), o.wal_dir);
  c.Exec("INSERT INTO marks VALUES (2, 1)");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "11");
  std::string failed = RollbackReport(c, id).value("failed_restore", "");
  std::string suffix = failed.substr(failed.find(".rollback-failed-") + 17);
  std::string failed_ts = std::filesystem::read_symlink(JoinPath(failed, "pg_tblspc/" + o.ts_oid)).string();
  EXPECT_EQ(failed_ts.rfind(o.ts_location + "/PG_15_", 0), 0u) << failed_ts;
  EXPECT_NE(failed_ts.find(".rollback-failed-" + suffix), std::string::npos) << failed_ts;
  EXPECT_TRUE(IsDirectory(failed_ts)) << failed_ts;
  EXPECT_EQ(std::filesystem::read_symlink(JoinPath(failed, "pg_wal")).string(),
            o.wal_dir + ".rollback-failed-" + suffix);
}

TEST(AgentKilledWhilePuttingTheOriginalBack,
     the_restarted_agent_finishes_putting_it_back_and_does_not_retry) {
  RecordFault(
      "recovery fails, and the agent is SIGKILLed right after moving the original data directory back, "
      "then restarted",
      "`rollback_failed`; the original data directory is running; the rollback is not run again");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "rollback:after:original_back"}}});
  int64_t id = UntilTheFailpointKillsTheAgent(c, BeginUpgradeWhoseRecoveryFails);
  ASSERT_FALSE(::testing::Test::HasFailure());
  c.StartAgent();  // without the failpoint
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rollback_failed") << c.Events(id) << c.AgentLog();
  ExpectOriginalRunningAfterFailedRecovery(c, id);
  // The journal, which decides what an agent start resumes, holds nothing to resume.
  auto journal = ReadJournal(c, id);
  EXPECT_EQ(journal.value("rollback", ""), "rollback_failed") << journal.dump();
  EXPECT_FALSE(journal.contains("rollback_putting_back")) << journal.dump();
}

}  // namespace
}  // namespace safe_upgrade::testing
