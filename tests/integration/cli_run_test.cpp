// `safe-upgrade run`, the whole pipeline as a separate process against real clusters: every exit
// code (0 succeeded / validated, 1 waiting for approval, 3 blocked, 4 rolled back, 5 rollback
// failed, 130 Ctrl-C), following across the server restart of a rollback, lock blockers, the
// approval flow and the progress bar on a terminal.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "base/config.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "cli_helpers.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

TEST(CliRun, upgrade_that_succeeds_exits_0_with_phases_and_a_summary) {
  TestCluster c;
  CreateHstoreSchema(c);
  auto r = Cli(c, {"run", "hstore", "1.8", "--approve"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.8");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM pro_accounts"), "2000");
  for (const char* phase : {"snapshotting", "dry_running", "scheduled", "applying", "verifying", "succeeded"})
    EXPECT_NE(r.out.find(phase), std::string::npos) << phase << "\n" << r.out;
  EXPECT_NE(r.out.find("outcome: succeeded"), std::string::npos) << r.out;
  // Not a terminal: plain lines, no progress bar drawn with carriage returns or escapes.
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(r.out.find("\033["), std::string::npos);

  int64_t id = LatestUpgradeId(c);
  auto status = Cli(c, {"status", std::to_string(id), "--json"});
  ASSERT_EQ(status.exit_code, 0);
  ExpectStatusJson(status, "succeeded", 0, "restore_point");
}

TEST(CliRun, dry_run_exits_0_as_validated_leaves_production_untouched_and_json_parses) {
  TestCluster c;
  CreateHstoreSchema(c);
  auto r = Cli(c, {"run", "hstore", "1.8", "--dry-run", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json j = ParseJson(r.out);
  EXPECT_EQ(j.value("state", ""), "validated") << r.out;
  EXPECT_EQ(j.value("exit_code", -1), 0);
  EXPECT_TRUE(j["options"].value("dry_run_only", false));
  EXPECT_TRUE(j["phases"].is_array() && j["phases"].size() >= 3) << r.out;
  EXPECT_TRUE(j["report"].contains("dry_run")) << r.out;
  EXPECT_NE(r.err.find("dry_running"), std::string::npos) << "progress goes to stderr with --json\n" << r.err;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points"), "0");
}

TEST(CliRun, without_approve_or_a_terminal_it_says_how_to_approve_and_exits_1) {
  TestCluster c;
  CreateHstoreSchema(c);
  auto r = Cli(c, {"run", "hstore", "1.8"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  int64_t id = LatestUpgradeId(c);
  ASSERT_GT(id, 0);
  EXPECT_EQ(StateOf(c, id), "awaiting_approval");
  EXPECT_NE(r.out.find("safe-upgrade approve " + std::to_string(id)), std::string::npos) << r.out;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");

  auto approve = Cli(c, {"approve", std::to_string(id)});
  ASSERT_EQ(approve.exit_code, 0) << approve.err;
  EXPECT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.8");
}

TEST(CliRun, upgrade_blocked_by_the_dry_run_exits_3_and_production_is_untouched) {
  TestCluster c;
  RequireExtension(c, "su_fixture_dropfn");
  c.Exec(
      "CREATE EXTENSION su_fixture_dropfn VERSION '1.0';"
      "CREATE VIEW answers AS SELECT su_dropfn_answer() AS answer;");
  auto r = Cli(c, {"run", "su_fixture_dropfn", "1.1", "--approve"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("outcome: blocked"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("answers"), std::string::npos) << "the reason names the view\n" << r.out;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT answer::text FROM answers"), "42");
}

// su_rollback_fixture 2.0 rejects amounts >= 1000. An order written after the snapshot is not in
// the dry run's clone, so the dry run passes and production fails its health check.
void CreateOrders(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION su_rollback_fixture VERSION '1.0';"
      "CREATE TABLE orders (id serial PRIMARY KEY, amount int NOT NULL);"
      "INSERT INTO orders (amount) SELECT g FROM generate_series(1, 500) g;"
      "SELECT safe_upgrade.add_health_check('orders_are_valid', "
      "  'SELECT bool_and(su_rb_validate(amount)) FROM orders', 'su_rollback_fixture');");
}

TEST(CliRun, upgrade_failing_its_health_check_on_production_is_rolled_back_and_exits_4) {
  TestCluster c;
  RequireExtension(c, "su_rollback_fixture");
  CreateOrders(c);
  Background run({"--dsn", c.ConnInfo(), "run", "su_rollback_fixture", "2.0", "--approve"}, c.root());
  ASSERT_TRUE(WaitUntil([&] { return LatestUpgradeId(c) > 0; }, 60s)) << run.Err();
  int64_t id = LatestUpgradeId(c);
  ASSERT_TRUE(c.WaitForState(id, "dry_running", 300s)) << c.Events(id);
  c.Exec("INSERT INTO orders (amount) VALUES (1500)");  // after the snapshot, before the restore point

  int code = run.Wait();
  EXPECT_EQ(code, 4) << run.Out() << run.Err() << c.Events(id);
  std::string out = run.Out();
  EXPECT_NE(out.find("rolling_back"), std::string::npos) << out;
  EXPECT_NE(out.find("reconnected"), std::string::npos) << "it follows across the server restart\n" << out;
  EXPECT_NE(out.find("outcome: rolled_back"), std::string::npos) << out;
  EXPECT_NE(out.find("data-loss window"), std::string::npos) << out;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM orders WHERE amount = 1500"), "1")
      << "a write before the restore point survives the rollback";

  auto status = Cli(c, {"status", std::to_string(id), "--json"});
  ExpectStatusJson(status, "rolled_back", 4, "data_loss_window");
}

TEST(CliRun, rollback_that_cannot_reach_the_restore_point_exits_5) {
  TestCluster c;
  c.ExpectCrashes();  // the failed recovery's server stops with FATAL
  RequireExtension(c, "su_rollback_fixture");
  CreateOrders(c);
  // Hold the apply back (its script locks su_rb_gate) until the restore point's WAL segment has
  // been removed from the archive, so the rollback that follows cannot replay to it.
  auto holder = c.Connect();
  holder->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE");
  // The cold path: a parked target may already have replayed the segment removed below.
  Background run(
      {"--dsn", c.ConnInfo(), "run", "su_rollback_fixture", "2.0", "--approve", "--rollback-target", "cold"},
      c.root());
  ASSERT_TRUE(WaitUntil([&] { return LatestUpgradeId(c) > 0; }, 60s)) << run.Err();
  int64_t id = LatestUpgradeId(c);
  ASSERT_TRUE(c.WaitForState(id, "dry_running", 300s)) << c.Events(id);
  c.Exec("INSERT INTO orders (amount) VALUES (1500)");
  ASSERT_TRUE(c.WaitForState(id, "applying", 300s)) << c.Events(id);
  // Once the apply waits for its lock, it has proven the archive complete; removing the segment
  // earlier would (rightly) fail the upgrade before production is touched.
  ASSERT_TRUE(
      WaitUntil([&] { return c.Events(id).find("waits for a lock held by pid") != std::string::npos; }, 120s))
      << c.Events(id);
  std::string segment =
      c.Scalar("SELECT wal_segment FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
               {std::to_string(id)});
  ASSERT_FALSE(segment.empty());
  std::string archived = JoinPath(c.info().agent_config.wal_archive_dir, segment);
  ASSERT_TRUE(PathExists(archived)) << archived;
  ASSERT_EQ(unlink(archived.c_str()), 0);
  holder->ExecScript("COMMIT");

  int code = run.Wait();
  EXPECT_EQ(code, 5) << run.Out() << run.Err() << c.Events(id);
  EXPECT_NE(run.Out().find("outcome: rollback_failed"), std::string::npos) << run.Out();
  EXPECT_EQ(StateOf(c, id), "rollback_failed");
}

TEST(CliRun, lock_blockers_are_shown_while_the_apply_waits) {
  TestCluster c;
  RequireExtension(c, "su_fixture_locking");
  c.Exec("CREATE EXTENSION su_fixture_locking VERSION '1.0'");
  auto holder = c.Connect();
  std::string holder_pid = std::to_string(holder->BackendPid());
  holder->ExecScript("BEGIN; LOCK TABLE su_locking_items IN ACCESS SHARE MODE");
  Background run({"--dsn", c.ConnInfo(), "run", "su_fixture_locking", "1.1", "--approve"}, c.root());
  bool shown =
      WaitUntil([&] { return run.Out().find("pid " + holder_pid) != std::string::npos; }, 300s, 100ms);
  holder->ExecScript("COMMIT");
  EXPECT_TRUE(shown) << "the blocking backend's pid is printed while the apply waits\n" << run.Out();
  EXPECT_EQ(run.Wait(), 0) << run.Out() << run.Err();
}

TEST(CliRun, ctrl_c_while_following_exits_130_and_the_upgrade_goes_on) {
  TestCluster c;
  CreateHstoreSchema(c);
  Background run({"--dsn", c.ConnInfo(), "run", "hstore", "1.8", "--approve"}, c.root());
  ASSERT_TRUE(WaitUntil([&] { return run.Out().find("upgrade ") != std::string::npos; }, 60s)) << run.Err();
  int64_t id = LatestUpgradeId(c);
  run.Signal(SIGINT);
  EXPECT_EQ(run.Wait(60s), 130) << run.Out() << run.Err();
  EXPECT_NE(run.Err().find("safe-upgrade status " + std::to_string(id)), std::string::npos) << run.Err();
  EXPECT_EQ(c.WaitForTerminalState(id), "succeeded") << "Ctrl-C must not cancel the upgrade\n"
                                                     << c.Events(id);
}

TEST(CliRun, progress_bar_is_drawn_only_on_a_terminal) {
  TestCluster c;
  // A throttled base backup takes a few seconds, long enough for the follower to see progress.
  c.Exec("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g");
  c.StopAgent();
  {
    AgentConfig config = ParseAgentConfig(ReadFile(c.info().agent_config_path), c.info().agent_config_path);
    config.backup_max_rate = "4M";
    AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(config), 0644);
    ChownTree(c.info().agent_config_path, c.info().os_user);
  }
  c.StartAgent();
  CreateHstoreSchema(c);
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; }, 60s));

  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string bin = CliBinary(), dsn = c.ConnInfo();
    execl(bin.c_str(), bin.c_str(), "--dsn", dsn.c_str(), "run", "hstore", "1.8", "--dry-run", nullptr);
    _exit(127);
  }
  std::string output;
  char buf[4096];
  while (true) {
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO once the child has exited and closed the terminal
    output.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  close(master);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find("\r\033[K"), std::string::npos) << "the bar redraws in place\n" << output;
  EXPECT_NE(output.find("[#"), std::string::npos) << output;
  EXPECT_NE(output.find("/s"), std::string::npos) << "the bar shows a rate\n" << output;
}

}  // namespace
}  // namespace safe_upgrade::testing
