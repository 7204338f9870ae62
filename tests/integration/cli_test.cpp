// The safe-upgrade command line, run as a separate process against real clusters: every exit code
// of `run` (0 succeeded / validated, 1 failures, 2 usage, 3 blocked, 4 rolled back, 5 rollback
// failed, 130 Ctrl-C), --json output that parses, connection errors that name host and port,
// following across the server restart of a rollback, lock blockers, and the approval flow.
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

// hstore 1.4 with data and a view that uses its operators, as a real schema would.
void CreateHstoreSchema(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE TABLE accounts (id serial PRIMARY KEY, attrs hstore);"
      "INSERT INTO accounts (attrs) SELECT hstore(ARRAY['plan', 'n'], ARRAY['pro', g::text]) "
      "  FROM generate_series(1, 2000) g;"
      "CREATE VIEW pro_accounts AS SELECT id FROM accounts WHERE attrs -> 'plan' = 'pro';");
}

// ---- usage: exit 2, usage on stderr -----------------------------------------------------------

TEST(CliUsage, unknown_subcommand_prints_usage_on_stderr_and_exits_2) {
  auto r = Cli({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown subcommand \"frobnicate\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Usage: safe-upgrade"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(CliUsage, unknown_flag_prints_the_subcommand_usage_on_stderr_and_exits_2) {
  auto r = Cli({"status", "--frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--frobnicate"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Usage: safe-upgrade status"), std::string::npos) << r.err;
  auto g = Cli({"--frobnicate", "history"});
  EXPECT_EQ(g.exit_code, 2) << g.err;
}

TEST(CliUsage, missing_or_malformed_arguments_exit_2) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {},
           {"run", "hstore"},
           {"plan"},
           {"approve"},
           {"cancel", "abc"},
           {"status", "-3"},
           {"rollback", "1", "2"},
           {"run", "hstore", "1.8", "--reconnect-timeout", "0"},
           {"run", "hstore", "1.8", "--rollback-target", "fast"},
           {"sandbox"},
       }) {
    auto r = Cli(args);
    std::string cmd;
    for (const auto& a : args) cmd += a + " ";
    EXPECT_EQ(r.exit_code, 2) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find("Usage:"), std::string::npos) << cmd << "\n" << r.err;
  }
}

TEST(CliUsage, every_subcommand_has_help_that_exits_0) {
  for (const auto& sub :
       std::vector<std::string>{"plan", "run", "status", "history", "approve", "cancel", "rollback",
                                "sandbox", "sandbox up", "sandbox down", "sandbox env"}) {
    std::vector<std::string> args;
    std::istringstream words(sub);
    for (std::string w; words >> w;) args.push_back(w);
    args.push_back("--help");
    auto r = Cli(args);
    EXPECT_EQ(r.exit_code, 0) << sub << "\n" << r.err;
    EXPECT_NE(r.out.find("Usage: safe-upgrade " + sub), std::string::npos) << sub << "\n" << r.out;
  }
  auto top = Cli({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  for (const char* word :
       {"plan", "run", "status", "history", "approve", "cancel", "rollback", "sandbox", "--dsn"})
    EXPECT_NE(top.out.find(word), std::string::npos) << word;
}

// ---- connection errors: exit 1, one line naming host and port ---------------------------------

TEST(CliConnection, unreachable_dsn_is_one_line_naming_host_and_port_and_exits_1) {
  std::string port = std::to_string(FreePort());
  for (const auto& args : std::vector<std::vector<std::string>>{{"plan", "hstore", "1.8"},
                                                                {"run", "hstore", "1.8", "--approve"},
                                                                {"status"},
                                                                {"history"},
                                                                {"approve", "1"}}) {
    std::vector<std::string> full = {"--dsn", "host=127.0.0.1 port=" + port + " connect_timeout=5"};
    full.insert(full.end(), args.begin(), args.end());
    auto r = Cli(full);
    EXPECT_EQ(r.exit_code, 1) << args[0] << "\n" << r.err;
    EXPECT_NE(r.err.find("127.0.0.1"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("port " + port), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected:\n" << r.err;
  }
}

TEST(CliConnection, libpq_environment_is_used_when_there_is_no_dsn) {
  std::string port = std::to_string(FreePort());
  auto r = Cli({"status"}, {{"PGHOST", "/nonexistent-socket-dir"}, {"PGPORT", port}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("host \"/nonexistent-socket-dir\" port " + port), std::string::npos) << r.err;
}

TEST(CliConnection, json_error_output_still_parses) {
  std::string port = std::to_string(FreePort());
  for (const auto& args : std::vector<std::vector<std::string>>{{"plan", "hstore", "1.8", "--json"},
                                                                {"status", "--json"},
                                                                {"history", "--json"},
                                                                {"cancel", "1", "--json"},
                                                                {"run", "hstore", "1.8", "--json"}}) {
    std::vector<std::string> full = {"--dsn", "host=127.0.0.1 port=" + port};
    full.insert(full.end(), args.begin(), args.end());
    auto r = Cli(full);
    EXPECT_EQ(r.exit_code, 1);
    json j = ParseJson(r.out);
    EXPECT_TRUE(j.contains("error")) << r.out;
    EXPECT_NE(j["error"].value("message", "").find(port), std::string::npos) << r.out;
  }
}

// ---- commands that need a server but not a finished pipeline ----------------------------------

class CliCommands : public ::testing::Test {
 protected:
  // The scheduler is off, so upgrades stay queued: these tests look at the command line, not at
  // the pipeline.
  void SetUp() override {
    ClusterOptions options;
    options.settings = {{"safe_upgrade.enabled", "off"}};
    c_ = std::make_unique<TestCluster>(options);
    CreateHstoreSchema(*c_);
    ASSERT_TRUE(WaitUntil(
        [&] { return c_->Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; }, 60s))
        << c_->Scalar("SELECT last_error FROM safe_upgrade.agent_status()");
  }
  std::unique_ptr<TestCluster> c_;
};

TEST_F(CliCommands, plan_report_starts_with_the_verdict_and_json_is_the_plan_document) {
  auto human = Cli(*c_, {"plan", "hstore", "1.8"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  auto verdict = human.out.find("verdict:");
  ASSERT_NE(verdict, std::string::npos) << human.out;
  for (const char* section : {"update path", "dependent objects", "PITR prerequisites", "rollback cost"}) {
    auto pos = human.out.find(section);
    EXPECT_NE(pos, std::string::npos) << section << "\n" << human.out;
    EXPECT_GT(pos, verdict) << section << " must come after the verdict";
  }
  EXPECT_NE(human.out.find("1.4 -> 1.5 -> 1.6 -> 1.7 -> 1.8"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("pro_accounts"), std::string::npos) << "the view depends on hstore\n" << human.out;

  auto r = Cli(*c_, {"plan", "hstore", "1.8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json plan = ParseJson(r.out);
  ASSERT_TRUE(plan.is_object());
  EXPECT_TRUE(plan.contains("verdict"));
  std::string direct = c_->Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text");
  EXPECT_EQ(plan["update_path"], json::parse(direct)["update_path"]);
}

TEST_F(CliCommands, server_errors_exit_1_and_print_the_hint) {
  auto unknown = Cli(*c_, {"plan", "no_such_extension", "1.0"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("safe-upgrade: error:"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("HINT: "), std::string::npos) << unknown.err;

  auto begin = Cli(*c_, {"run", "no_such_extension", "1.0", "--approve"});
  EXPECT_EQ(begin.exit_code, 1) << "a begin() error is exit 1";
  EXPECT_NE(begin.err.find("HINT: "), std::string::npos) << begin.err;

  auto same = Cli(*c_, {"run", "hstore", "1.4", "--json"});
  EXPECT_EQ(same.exit_code, 1);
  json j = ParseJson(same.out);
  EXPECT_EQ(j["error"].value("sqlstate", ""), "22023") << same.out;
  EXPECT_FALSE(j["error"]["hint"].is_null()) << same.out;

  auto missing = Cli(*c_, {"approve", "999999"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("HINT: "), std::string::npos) << missing.err;
}

TEST_F(CliCommands, status_history_and_actions_print_json_that_parses) {
  int64_t id = c_->BeginUpgrade("hstore", "1.8", R"({"require_approval": true})");
  std::string sid = std::to_string(id);

  auto status = Cli(*c_, {"status", sid, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  json s = ParseJson(status.out);
  EXPECT_EQ(s.value("id", 0), id);
  EXPECT_EQ(s.value("state", ""), "queued");
  EXPECT_EQ(s.value("terminal", true), false);
  EXPECT_TRUE(s["exit_code"].is_null());
  EXPECT_EQ(s.value("extname", ""), "hstore");
  EXPECT_EQ(s.value("from_version", ""), "1.4");
  EXPECT_EQ(s.value("to_version", ""), "1.8");
  EXPECT_TRUE(s["phases"].is_array() && !s["phases"].empty()) << status.out;
  EXPECT_TRUE(s["events"].is_array() && !s["events"].empty()) << status.out;

  auto current = Cli(*c_, {"status"});
  ASSERT_EQ(current.exit_code, 0) << current.err;
  EXPECT_NE(current.out.find("upgrade " + sid + ": hstore 1.4 -> 1.8"), std::string::npos) << current.out;

  auto history = Cli(*c_, {"history", "--json"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  json h = ParseJson(history.out);
  ASSERT_TRUE(h.is_array());
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].value("id", 0), id);
  EXPECT_EQ(h[0].value("state", ""), "queued");
  auto table = Cli(*c_, {"history"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("1.4 -> 1.8"), std::string::npos) << table.out;

  auto approve = Cli(*c_, {"approve", sid, "--json"});
  ASSERT_EQ(approve.exit_code, 0) << approve.err;
  json a = ParseJson(approve.out);
  EXPECT_EQ(a.value("action", ""), "approve");
  EXPECT_EQ(a.value("id", 0), id);

  auto rollback = Cli(*c_, {"rollback", sid, "--json"});
  EXPECT_EQ(rollback.exit_code, 1) << "a queued upgrade cannot be rolled back";
  EXPECT_TRUE(ParseJson(rollback.out).contains("error"));
  EXPECT_NE(rollback.err.find("HINT: "), std::string::npos) << rollback.err;

  auto cancel = Cli(*c_, {"cancel", sid, "--json"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(ParseJson(cancel.out).value("action", ""), "cancel");
  EXPECT_EQ(
      c_->Scalar("SELECT cancel_requested::text FROM safe_upgrade.upgrades WHERE id = $1::bigint", {sid}),
      "true");
}

TEST_F(CliCommands, status_of_a_missing_upgrade_exits_1) {
  auto none = Cli(*c_, {"status"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no upgrades"), std::string::npos) << none.err;
  auto missing = Cli(*c_, {"status", "424242", "--json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(ParseJson(missing.out).contains("error"));
}

// ---- run: the whole pipeline ------------------------------------------------------------------

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
  json s = ParseJson(status.out);
  EXPECT_EQ(s.value("state", ""), "succeeded");
  EXPECT_EQ(s.value("exit_code", -1), 0);
  EXPECT_TRUE(s["restore_point"].is_object()) << status.out;
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
  json s = ParseJson(status.out);
  EXPECT_EQ(s.value("state", ""), "rolled_back");
  EXPECT_EQ(s.value("exit_code", -1), 4);
  EXPECT_TRUE(s["data_loss_window"].is_object()) << status.out;
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
  Background run({"--dsn", c.ConnInfo(), "run", "su_rollback_fixture", "2.0", "--approve", "--rollback-target", "cold"},
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

// ---- packaging ------------------------------------------------------------------------------

TEST(CliPackaging, example_agent_config_parses_and_matches_the_systemd_unit) {
  std::string dir = JoinPath(kSourceDir, "agent/packaging");
  AgentConfig config = ParseAgentConfig(ReadFile(JoinPath(dir, "agent.toml")), "agent.toml");
  EXPECT_EQ(config.data_directory, "/var/lib/postgresql/15/main");
  EXPECT_EQ(config.bin_dir, "/usr/lib/postgresql/15/bin");
  EXPECT_EQ(config.control, "systemd postgresql@15-main");
  EXPECT_TRUE(config.log_file.empty()) << "under systemd the agent logs to the journal";
  std::string unit = ReadFile(JoinPath(dir, "safe-upgrade-agent.service"));
  // The unit's runtime directory holds the socket the configuration listens on.
  EXPECT_EQ(config.listen, "unix:/run/safe-upgrade/agent.sock");
  EXPECT_NE(unit.find("RuntimeDirectory=safe-upgrade\n"), std::string::npos) << unit;
  EXPECT_NE(
      unit.find("ExecStart=/usr/local/bin/safe-upgrade-agent serve --config /etc/safe-upgrade/agent.toml"),
      std::string::npos)
      << unit;
  EXPECT_NE(unit.find("User=postgres"), std::string::npos);
  EXPECT_NE(unit.find("KillMode=process"), std::string::npos)
      << "stopping the agent must not stop PostgreSQL";
}

}  // namespace
}  // namespace safe_upgrade::testing
