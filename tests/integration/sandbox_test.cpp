// The sandbox command: idempotent up, down stops both processes, env lines work with psql, and a
// non-empty directory that is not a sandbox is refused untouched.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <sstream>

#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

class SandboxCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/su-sandbox-XXXXXX";
    root_ = mkdtemp(tmpl);
    chmod(root_.c_str(), 0755);
    dir_ = JoinPath(root_, "sb");
  }
  void TearDown() override {
    Cli({"sandbox", "down", "--dir", dir_});
    RemoveTree(root_);
  }
  ProcessResult Cli(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> argv = {JoinPath(BuildDir(), "safe-upgrade")};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions opt;
    opt.env = env;
    opt.timeout = 5min;
    return RunProcess(argv, opt);
  }
  std::string root_, dir_;
};

TEST_F(SandboxCommand, up_twice_is_harmless_and_down_stops_server_and_agent) {
  auto first = Cli({"sandbox", "up", "--dir", dir_});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto info = SandboxOpen(dir_);
  ServerControl server(kPgBinDir, info.data_dir, "pg_ctl", info.os_user);
  long pid = server.PostmasterPid();
  long agent_pid = SandboxAgentPid(info);
  ASSERT_TRUE(server.Running());
  ASSERT_TRUE(SandboxAgentRunning(info));
  for (const char* f : {"data", "postgres.log", "agent.log", "agent.pid", "env"})
    EXPECT_TRUE(PathExists(JoinPath(dir_, f))) << f;

  auto second = Cli({"sandbox", "up", "--dir", dir_});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(server.PostmasterPid(), pid) << "a running server must not be restarted";
  EXPECT_EQ(SandboxAgentPid(info), agent_pid) << "a running agent must not be restarted";

  auto down = Cli({"sandbox", "down", "--dir", dir_});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  EXPECT_FALSE(server.Running());
  EXPECT_FALSE(SandboxAgentRunning(info));
}

TEST_F(SandboxCommand, up_restarts_what_is_not_running) {
  ASSERT_EQ(Cli({"sandbox", "up", "--dir", dir_}).exit_code, 0);
  auto info = SandboxOpen(dir_);
  SandboxStopAgent(info, SIGKILL);
  ASSERT_FALSE(SandboxAgentRunning(info));
  auto again = Cli({"sandbox", "up", "--dir", dir_});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(SandboxAgentRunning(info));
}

TEST_F(SandboxCommand, env_lines_work_with_psql) {
  ASSERT_EQ(Cli({"sandbox", "up", "--dir", dir_}).exit_code, 0);
  auto env = Cli({"sandbox", "env", "--dir", dir_});
  ASSERT_EQ(env.exit_code, 0) << env.err;
  EXPECT_NE(env.out.find("PGPORT="), std::string::npos);
  // The file holds KEY=value lines; feed them to psql's environment exactly as a shell would.
  std::map<std::string, std::string> vars;
  std::istringstream in(ReadFile(JoinPath(dir_, "env")));
  for (std::string line; std::getline(in, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) vars[line.substr(0, eq)] = line.substr(eq + 1);
  }
  ASSERT_EQ(vars.size(), 4u);
  ProcessOptions opt;
  opt.env = vars;
  auto psql = RunProcess({std::string(kPgBinDir) + "/psql", "-XAtc",
                          "SELECT extname FROM pg_extension WHERE extname = 'safe_upgrade'"},
                         opt);
  ASSERT_EQ(psql.exit_code, 0) << psql.err;
  EXPECT_EQ(psql.out, "safe_upgrade\n");
  // And through `sh` sourcing the export lines printed by `sandbox env`.
  auto sh = RunProcess({"sh", "-c", env.out + std::string(kPgBinDir) + "/psql -XAtc 'SELECT 1'"}, {});
  EXPECT_EQ(sh.exit_code, 0) << sh.err;
  EXPECT_EQ(sh.out, "1\n");
}

TEST_F(SandboxCommand, non_empty_directory_that_is_not_a_sandbox_is_refused_untouched) {
  EnsureDir(dir_, 0755);
  AtomicWriteFile(JoinPath(dir_, "precious.txt"), "keep me", 0644);
  auto r = Cli({"sandbox", "up", "--dir", dir_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a sandbox"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFile(JoinPath(dir_, "precious.txt")), "keep me");
  EXPECT_FALSE(PathExists(JoinPath(dir_, "data")));
  EXPECT_FALSE(PathExists(JoinPath(dir_, "sandbox.json")));
}

TEST_F(SandboxCommand, down_and_env_on_a_non_sandbox_fail_clearly) {
  auto r = Cli({"sandbox", "env", "--dir", root_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a safe-upgrade sandbox"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace safe_upgrade::testing
