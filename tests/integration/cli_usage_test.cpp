// The safe-upgrade command line without a pipeline: usage errors (exit 2, usage on stderr), help
// for every subcommand, connection errors that name host and port (exit 1, JSON that still
// parses), and the packaged agent configuration.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/config.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "cli_helpers.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

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
