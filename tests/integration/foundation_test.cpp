// Foundation: the worker runs and reaches the agent over gRPC, agent_status() follows the agent's
// availability, GUCs reload, the library refuses to load outside shared_preload_libraries, and
// the agent refuses bad configuration.
#include <gtest/gtest.h>

#include "base/fs_util.h"
#include "build_info.h"
#include "pg_errors.h"
#include "postgres/cluster.h"
#include "rpc/agent_client.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

bool AgentReachable(const TestCluster& c) {
  return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true";
}

TEST(Worker, worker_runs_and_reaches_the_agent_over_grpc) {
  TestCluster c;
  EXPECT_TRUE(WaitUntil(
      [&] {
        return c.Scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'safe_upgrade scheduler'") == "1";
      },
      30s));
  ASSERT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s)) << c.Scalar(
      "SELECT last_error FROM safe_upgrade.agent_status()");
  EXPECT_EQ(c.Scalar("SELECT system_identifier::text FROM safe_upgrade.agent_status()"),
            c.Scalar("SELECT system_identifier::text FROM pg_control_system()"));
  EXPECT_EQ(c.Scalar("SELECT agent_version FROM safe_upgrade.agent_status()"), kVersion);
  EXPECT_EQ(c.Scalar("SELECT data_directory FROM safe_upgrade.agent_status()"), c.info().data_dir);
}

TEST(Worker, agent_status_reports_unreachable_then_reachable_without_crash_looping) {
  TestCluster c({.settings = {{"safe_upgrade.agent_check_interval", "'200ms'"}}});
  ASSERT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
  std::string worker_pid = c.Scalar("SELECT worker_pid::text FROM safe_upgrade.agent_status()");
  ASSERT_FALSE(worker_pid.empty());

  c.StopAgent();
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "false"; },
                        30s));
  EXPECT_FALSE(c.Scalar("SELECT last_error FROM safe_upgrade.agent_status()").empty());
  // Let the worker ping a few dozen times against the dead agent.
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(c.Scalar("SELECT worker_pid::text FROM safe_upgrade.agent_status()"), worker_pid)
      << "the worker restarted while the agent was down";

  c.StartAgent();
  ASSERT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
  EXPECT_EQ(c.Scalar("SELECT worker_pid::text FROM safe_upgrade.agent_status()"), worker_pid);
  std::string log = c.ServerLog();
  size_t unreachable_lines = 0;
  for (size_t pos = 0; (pos = log.find("is unreachable", pos)) != std::string::npos; ++pos) ++unreachable_lines;
  EXPECT_EQ(unreachable_lines, 1u) << "one outage must log one line, not one per ping";
}

TEST(Worker, agent_address_change_takes_effect_on_reload) {
  TestCluster c({.settings = {{"safe_upgrade.agent_check_interval", "'200ms'"}}});
  ASSERT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
  c.Exec("ALTER SYSTEM SET safe_upgrade.agent_address = 'unix:/nonexistent/agent.sock'");
  c.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Scalar("SELECT address FROM safe_upgrade.agent_status()") == "unix:/nonexistent/agent.sock"; },
      30s));
  EXPECT_EQ(c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()"), "false");
  c.Exec("ALTER SYSTEM RESET safe_upgrade.agent_address");
  c.Exec("SELECT pg_reload_conf()");
  EXPECT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
}

TEST(Worker, worker_stops_cleanly_with_the_server) {
  TestCluster c;
  ASSERT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
  c.StopServer("fast");
  std::string log = c.ServerLog();
  EXPECT_NE(log.find("safe_upgrade: scheduler shutting down"), std::string::npos) << log;
  EXPECT_EQ(log.find("terminated by signal"), std::string::npos);
  c.StartServer();
  EXPECT_TRUE(WaitUntil([&] { return AgentReachable(c); }, 30s));
}

TEST(Extension, load_without_shared_preload_libraries_fails_with_a_hint) {
  TestCluster c({.settings = {{"shared_preload_libraries", "''"}}, .start_agent = false, .create_extension = false});
  auto conn = c.Connect();
  PgError e = ErrorOf(*conn, "LOAD 'safe_upgrade'");
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_NE(e.message().find("shared_preload_libraries"), std::string::npos) << e.message();
  EXPECT_NE(e.hint().find("shared_preload_libraries"), std::string::npos) << e.hint();
}

TEST(Extension, create_extension_makes_the_catalog_and_the_operator_role) {
  TestCluster c({.start_agent = false});
  for (const char* table : {"upgrades", "events", "restore_points", "dependency_snapshots", "health_checks"})
    EXPECT_EQ(c.Scalar("SELECT to_regclass('safe_upgrade." + std::string(table) + "') IS NOT NULL"), "t") << table;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'safe_upgrade_operator'"), "1");
  for (const char* col : {"id", "extname", "from_version", "to_version", "state", "options", "created_at",
                          "updated_at", "error"})
    EXPECT_EQ(c.Scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'safe_upgrade' "
                       "AND table_name = 'upgrades' AND column_name = $1",
                       {std::string(col)}),
              "1")
        << col;
}

TEST(Agent, ping_returns_version_and_the_cluster_it_serves) {
  TestCluster c;
  auto client = AgentClient::Create(c.info().agent_config.listen, 5000);
  AgentPing ping;
  auto err = client->Ping(ping);
  ASSERT_TRUE(err.ok) << err.message;
  EXPECT_EQ(ping.agent_version, kVersion);
  EXPECT_EQ(ping.api_version, "v1");
  EXPECT_EQ(ping.data_directory, c.info().data_dir);
  EXPECT_EQ(std::to_string(ping.system_identifier), c.Scalar("SELECT system_identifier::text FROM pg_control_system()"));
}

TEST(Agent, stops_cleanly_on_sigterm_and_releases_its_socket) {
  TestCluster c;
  c.StopAgent();
  EXPECT_FALSE(c.AgentRunning());
  EXPECT_NE(c.AgentLog().find("agent stopped"), std::string::npos) << c.AgentLog();
  c.StartAgent();  // a second start on the same socket works
  EXPECT_TRUE(c.AgentRunning());
}

class AgentBadConfig : public ::testing::Test {
 protected:
  // A complete agent configuration but for its data directory, which the tests get wrong.
  static std::string ConfigWithDataDirectory(const std::string& data_directory) {
    return "[cluster]\ndata_directory = \"" + data_directory +
           "\"\n[agent]\nlisten = \"unix:/tmp/x.sock\"\nsnapshot_dir = \"/tmp/s\"\nwal_archive_dir = "
           "\"/tmp/w\"\n";
  }
  ProcessResult RunAgentWith(const std::string& toml) {
    char tmpl[] = "/tmp/su-badcfg-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::string path = JoinPath(dir_, "agent.toml");
    AtomicWriteFile(path, toml, 0644);
    ProcessOptions opt;
    opt.timeout = 20s;
    return RunProcess({JoinPath(BuildDir(), "safe-upgrade-agent"), "serve", "--config", path}, opt);
  }
  void TearDown() override { RemoveTree(dir_); }
  std::string dir_;
};

TEST_F(AgentBadConfig, missing_data_directory_is_refused_naming_the_key) {
  auto r = RunAgentWith(ConfigWithDataDirectory("/nonexistent/data"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cluster.data_directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/data"), std::string::npos) << r.err;
}

TEST_F(AgentBadConfig, wrong_data_directory_is_refused_naming_the_key) {
  auto r = RunAgentWith(ConfigWithDataDirectory("/tmp"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cluster.data_directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not a PostgreSQL data directory"), std::string::npos) << r.err;
}

TEST_F(AgentBadConfig, missing_config_file_is_refused) {
  ProcessOptions opt;
  auto r = RunProcess({JoinPath(BuildDir(), "safe-upgrade-agent"), "--config", "/nonexistent/agent.toml"}, opt);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/nonexistent/agent.toml"), std::string::npos) << r.err;
  dir_ = "/nonexistent-never-created";
}

}  // namespace
}  // namespace safe_upgrade::testing
