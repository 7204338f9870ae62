// Fault injection around snapshot, dry run and apply, and the environment the worker depends on:
// the agent SIGKILLed at each journaled step and between the databases of an apply, the
// postmaster killed while applying, a long agent outage, and an unwritable WAL archive.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/fs_util.h"
#include "fault_report.h"
#include "pg_errors.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

void PrepareHstore(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE TABLE h (id int, v hstore);"
      "INSERT INTO h SELECT g, hstore('k', g::text) FROM generate_series(1, 1000) g;");
}

class AgentKilledBeforeApply : public ::testing::TestWithParam<std::string> {};

TEST_P(AgentKilledBeforeApply, the_step_is_run_again_and_the_dry_run_validates_with_production_untouched) {
  const std::string failpoint = GetParam();
  RecordFault("agent SIGKILLed at `" + failpoint + "` (dry run only), then restarted",
              "`validated` after the step is run again; production untouched; no clone left behind");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", failpoint}}});
  PrepareHstore(c);
  std::string started = c.Scalar("SELECT pg_postmaster_start_time()::text");
  int64_t id = c.BeginUpgrade("hstore", "1.8", R"({"dry_run_only": true})");
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 300s)) << "the failpoint never fired";
  c.StartAgent();
  ASSERT_EQ(c.WaitForTerminalState(id, 300s), "validated") << c.Events(id);
  EXPECT_NE(c.Events(id).find("the agent restarted during"), std::string::npos) << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started);
  std::string clones = JoinPath(c.info().agent_config.work_dir, "clones");
  EXPECT_TRUE(!IsDirectory(clones) || std::filesystem::is_empty(clones)) << "a clone was left behind";
}

INSTANTIATE_TEST_SUITE_P(EveryJournaledStep, AgentKilledBeforeApply,
                         ::testing::Values("snapshot:after_basebackup", "snapshot:after_verify",
                                           "dryrun:after_clone_start"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == ':') ch = '_';
                           return n;
                         });

// An upgrade that covers two databases: the agent dies after the apply committed in the first.
// The restarted agent has forgotten the job; the worker finds the extension upgraded in one
// database only, and a half-upgraded cluster is rolled back as a whole, never applied again.
TEST(AgentKilledBetweenDatabases, the_half_upgraded_cluster_is_rolled_back_with_one_pitr) {
  RecordFault(
      "agent SIGKILLed after the apply committed in the first of two databases, then restarted",
      "`rolled_back`: the extension was upgraded in one database only, so the whole cluster goes back to the "
      "restore point; the apply is not run again");
  TestCluster c({.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "apply:between_databases"}}});
  auto version_in = [&](const std::string& db) {
    auto r = c.Connect(db)->Exec("SELECT extversion FROM pg_extension WHERE extname = 'hstore'");
    return r.Empty() || !r.rows[0][0] ? std::string() : *r.rows[0][0];
  };
  for (const std::string db : {"app1", "app2"}) {
    c.Exec("CREATE DATABASE " + db);
    c.Connect(db)->ExecScript("CREATE EXTENSION hstore VERSION '1.4'");
  }
  int64_t id = c.BeginUpgrade("hstore", "1.8");
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 300s)) << "the failpoint never fired";
  EXPECT_EQ(version_in("app1"), "1.8");
  EXPECT_EQ(version_in("app2"), "1.4");
  c.StartAgent();
  ASSERT_EQ(c.WaitForTerminalState(id, 300s), "rolled_back") << c.Events(id);
  EXPECT_EQ(version_in("app1"), "1.4");
  EXPECT_EQ(version_in("app2"), "1.4");
  std::string events = c.Events(id);
  EXPECT_NE(events.find("the upgrade committed in app1 (1.8) but not in app2 (1.4)"), std::string::npos)
      << events;
  EXPECT_EQ(c.Scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002") << "one PITR";
}

TEST(PostmasterKilledWhileApplying, the_upgrade_is_applied_at_most_once) {
  RecordFault("postmaster SIGKILLed while the apply waits for a lock, then restarted",
              "the apply never committed, so it ends either `succeeded` with the script run exactly once or "
              "`failed` with the old version; never applied twice");
  TestCluster c;
  c.ExpectCrashes();
  c.Exec("CREATE EXTENSION su_rollback_fixture VERSION '1.0'");
  auto blocker = c.Connect();
  blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"lock_timeout": "1s", "max_lock_retries": 100})");
  ASSERT_TRUE(c.WaitForState(id, "applying", 300s)) << c.Events(id);
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Events(id).find("holds AccessShareLock on su_rb_gate") != std::string::npos; }, 60s))
      << c.Events(id);
  blocker.reset();
  c.KillPostmaster();
  ASSERT_TRUE(WaitUntil(
      [&] {
        c.StartServer();
        return true;
      },
      60s, 500ms));
  std::string state = c.WaitForTerminalState(id, 300s);
  std::string version = c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'");
  std::string runs = c.Scalar("SELECT count(*) FROM su_rb_applied");
  if (state == "succeeded") {
    EXPECT_EQ(version, "2.0");
    EXPECT_EQ(runs, "1") << "the upgrade script ran more than once";
  } else {
    EXPECT_EQ(state, "failed") << c.Events(id);
    EXPECT_EQ(version, "1.0");
    EXPECT_EQ(runs, "0");
  }
}

TEST(AgentOutage, a_long_outage_fails_the_upgrade_before_production_with_a_quiet_bounded_log) {
  RecordFault("agent stopped for a long time while an upgrade waits to start",
              "`failed` after safe_upgrade.agent_unreachable_timeout, production untouched; one log line per outage");
  TestCluster c({.settings = {{"safe_upgrade.agent_unreachable_timeout", "'4s'"},
                              {"safe_upgrade.agent_check_interval", "'200ms'"},
                              {"safe_upgrade.poll_interval", "'50ms'"}}});
  PrepareHstore(c);
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; },
                        30s));
  c.Exec("ALTER SYSTEM SET safe_upgrade.enabled = off");
  c.Exec("SELECT pg_reload_conf()");
  int64_t id = c.BeginUpgrade("hstore", "1.8");
  c.StopAgent();
  c.Exec("ALTER SYSTEM RESET safe_upgrade.enabled");
  c.Exec("SELECT pg_reload_conf()");
  ASSERT_EQ(c.WaitForTerminalState(id, 120s), "failed") << c.Events(id);
  std::string error = c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("unreachable"), std::string::npos) << error;
  EXPECT_NE(error.find("production was not touched"), std::string::npos) << error;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
  std::string log = c.ServerLog();
  size_t lines = 0;
  for (size_t pos = 0; (pos = log.find("safe_upgrade", pos)) != std::string::npos; ++pos) ++lines;
  EXPECT_LE(lines, 12u) << "the worker's log must stay quiet during an outage:\n" << log;
}

TEST(ArchiveNotWritable, the_preflight_names_the_archive_and_begin_refuses) {
  RecordFault("the WAL archive directory is not writable by the agent",
              "plan() verdict `blocked` naming the archive; begin() refused with 55000; nothing started");
  TestCluster c({.settings = {{"safe_upgrade.agent_check_interval", "'200ms'"}}});
  PrepareHstore(c);
  std::string archive = c.info().agent_config.wal_archive_dir;
  chmod(archive.c_str(), 0500);
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Scalar("SELECT wal_archive_writable::text FROM safe_upgrade.agent_status()") == "false"; }, 30s));
  std::string plan = c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text");
  EXPECT_NE(plan.find("\"verdict\": \"blocked\""), std::string::npos) << plan;
  EXPECT_NE(plan.find("WAL archive"), std::string::npos) << plan;
  auto conn = c.Connect();
  // begin() must refuse an upgrade with an unwritable archive.
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '1.8')");
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_NE(e.Full().find("WAL archive"), std::string::npos) << e.Full();
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
  chmod(archive.c_str(), 0700);
}

}  // namespace
}  // namespace safe_upgrade::testing
