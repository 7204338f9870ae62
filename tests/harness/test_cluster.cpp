// Test harness implementation.
#include "test_cluster.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <exception>
#include <iostream>
#include <set>
#include <sstream>

#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/cluster.h"

namespace safe_upgrade::testing {
namespace {

std::string Tail(const std::string& text, size_t max_bytes = 12000) {
  return text.size() <= max_bytes ? text : "...\n" + text.substr(text.size() - max_bytes);
}

std::string ReadOrEmpty(const std::string& path) {
  try {
    return ReadFile(path);
  } catch (...) {
    return "";
  }
}

}  // namespace

std::string BuildDir() { return kBuildDir; }

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    try {
      if (pred()) return true;
    } catch (const std::exception&) {
      // not ready yet (e.g. the server is restarting)
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

void TestCluster::WaitForWorkerToReachAgent() const {
  std::string since = Scalar("SELECT now()::text");
  EXPECT_TRUE(WaitUntil(
      [&] {
        return Scalar("SELECT (reachable AND checked_at > $1::timestamptz)::text FROM safe_upgrade.agent_status()",
                      {since}) == "true";
      },
      std::chrono::seconds(60)))
      << "the worker did not reach the agent: " << Scalar("SELECT last_error FROM safe_upgrade.agent_status()");
}

bool CommandRuns(const std::vector<std::string>& argv) {
  try {
    ProcessOptions opt;
    opt.timeout = std::chrono::seconds(30);
    return RunProcess(argv, opt).Ok();
  } catch (const std::exception&) {
    return false;
  }
}

bool ExtensionAvailable(PgConn& conn, const std::string& name) {
  return !conn.Exec("SELECT 1 FROM pg_available_extensions WHERE name = $1", {name}).Empty();
}

TestCluster::TestCluster(ClusterOptions options) : options_(std::move(options)) {
  std::string tmpl = JoinPath(options_.root_parent, "su-test-XXXXXX");
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in " + options_.root_parent);
  root_ = tmpl;
  chmod(root_.c_str(), 0755);
  SandboxOptions so;
  so.agent_binary = JoinPath(BuildDir(), "safe-upgrade-agent");
  so.extra_settings = options_.settings;
  so.agent_env = options_.agent_env;
  so.start_agent = options_.start_agent;
  so.create_extension = options_.create_extension;
  so.allow_root_callers = options_.allow_root_callers;
  so.backend = options_.backend;
  so.repo_options = options_.repo_options;
  so.standbys = options_.standbys;
  so.standby_settings = options_.standby_settings;
  so.standby_bin_dir = options_.standby_bin_dir;
  if (options_.debian_cluster) {
    // Unique among the clusters of this host: the temporary directory's random part.
    debian_.name = "su_test_" + root_.substr(root_.rfind('-') + 1);
    info_ = CreateDebianCluster(JoinPath(root_, "sb"), so, debian_);
    server_log_ = debian_.log_file;
    return;
  }
  try {
    info_ = SandboxUp(JoinPath(root_, "sb"), so);
    server_log_ = info_.agent_config.server_log;
  } catch (...) {
    std::cerr << "--- postgres.log ---\n" << Tail(ReadOrEmpty(JoinPath(root_, "sb/postgres.log"))) << "\n";
    std::cerr << "--- agent.log ---\n" << Tail(ReadOrEmpty(JoinPath(root_, "sb/agent.log"))) << "\n";
    for (int k = 1; k <= options_.standbys; ++k) {
      std::string dir = JoinPath(root_, "sb/standby" + std::to_string(k));
      std::cerr << "--- standby" << k << "/postgres.log ---\n" << Tail(ReadOrEmpty(dir + "/postgres.log")) << "\n";
    }
    throw;
  }
}

TestCluster::~TestCluster() {
  // An exception escaping the test body is a failure gtest records only after we are gone.
  bool failed = ::testing::Test::HasFailure() || std::uncaught_exceptions() > 0;
  std::string log = ServerLog();
  if (!options_.expect_crashes && log.find("terminated by signal") != std::string::npos) {
    ADD_FAILURE() << "a server process was terminated by a signal; see postgres.log below";
    failed = true;
  }
  if (failed) {
    std::cerr << "--- " << server_log_ << " ---\n" << Tail(log) << "\n";
    std::cerr << "--- " << info_.dir << "/agent.log ---\n" << Tail(AgentLog()) << "\n";
    for (const auto& standby : info_.standbys) {
      std::cerr << "--- " << standby.dir << "/postgres.log ---\n"
                << Tail(ReadOrEmpty(standby.agent_config.server_log)) << "\n";
      std::cerr << "--- " << standby.dir << "/agent.log ---\n" << Tail(ReadOrEmpty(standby.agent_config.log_file))
                << "\n";
    }
  }
  for (const auto& standby : info_.standbys) {
    try {
      SandboxStopAgent(standby, SIGTERM);
      ServerControl(kPgBinDir, standby.data_dir, "pg_ctl", standby.os_user, "").Stop("immediate");
    } catch (...) {
    }
  }
  try {
    SandboxStopAgent(info_, SIGTERM);
  } catch (...) {
  }
  if (options_.debian_cluster) {
    DropDebianCluster(debian_);
  } else {
    try {
      Server().Stop("immediate");
    } catch (...) {
    }
  }
  if (!getenv("SU_KEEP_TEST_DIRS")) {
    try {
      RemoveTree(root_);
    } catch (...) {
    }
  } else {
    std::cerr << "test directory kept: " << root_ << "\n";
  }
}

std::unique_ptr<PgConn> TestCluster::Connect(const std::string& dbname) const {
  return std::make_unique<PgConn>(ConnInfo(dbname));
}

std::string TestCluster::Scalar(const std::string& sql,
                                const std::vector<std::optional<std::string>>& params) const {
  auto conn = Connect();
  auto r = conn->Exec(sql, params);
  if (r.rows.empty() || r.rows[0].empty() || !r.rows[0][0]) return "";
  return *r.rows[0][0];
}

void TestCluster::Exec(const std::string& sql) const { Connect()->ExecScript(sql); }

void TestCluster::StartAgent(const std::map<std::string, std::string>& env) { SandboxStartAgent(info_, env); }
void TestCluster::StopAgent() { SandboxStopAgent(info_, SIGTERM); }
void TestCluster::KillAgent() { SandboxStopAgent(info_, SIGKILL); }
bool TestCluster::AgentRunning() const { return SandboxAgentRunning(info_); }

// How the agent controls the server: pg_ctl for a sandbox, pg_ctlcluster for a Debian cluster.
ServerControl TestCluster::Server() const {
  return ServerControl(kPgBinDir, info_.data_dir, info_.agent_config.control, info_.os_user,
                       info_.agent_config.server_log);
}

void TestCluster::StopServer(const std::string& mode) { Server().Stop(mode); }

void TestCluster::StartServer() { Server().Start(); }

bool TestCluster::ServerRunning() const { return Server().Running(); }

void TestCluster::KillPostmaster() {
  options_.expect_crashes = true;
  long pid = Server().PostmasterPid();
  if (pid > 0) kill(static_cast<pid_t>(pid), SIGKILL);
  WaitUntil([&] { return !ProcessAlive(static_cast<pid_t>(pid)); }, std::chrono::seconds(30));
}

std::string TestCluster::ServerLog() const { return ReadOrEmpty(server_log_); }
std::string TestCluster::AgentLog() const {
  return ReadOrEmpty(info_.agent_config.log_file) + ReadOrEmpty(JoinPath(info_.dir, "agent.stderr"));
}

ProcessResult TestCluster::RunAsServiceUser(const std::vector<std::string>& argv,
                                            const std::map<std::string, std::string>& env) const {
  ProcessOptions opt;
  opt.run_as = info_.os_user;
  opt.env = env;
  opt.timeout = std::chrono::minutes(10);
  return RunProcess(argv, opt);
}

std::string TestCluster::ScratchDir(const std::string& name) const {
  std::string dir = JoinPath(root_, name);
  EnsureDir(dir, 0700);
  ChownTree(dir, info_.os_user);
  return dir;
}

std::string TestCluster::WaitForTerminalState(int64_t upgrade_id, std::chrono::seconds timeout) const {
  std::string state = "timeout";
  static const std::set<std::string> terminal = {"succeeded",   "validated",       "blocked",  "failed",
                                                 "rolled_back", "rollback_failed", "cancelled"};
  WaitUntil(
      [&] {
        std::string s = Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                               {std::to_string(upgrade_id)});
        if (terminal.count(s)) {
          state = s;
          return true;
        }
        return false;
      },
      timeout, std::chrono::milliseconds(200));
  return state;
}

bool TestCluster::WaitForState(int64_t upgrade_id, const std::string& state,
                               std::chrono::seconds timeout) const {
  return WaitUntil(
      [&] {
        return Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                      {std::to_string(upgrade_id)}) == state;
      },
      timeout, std::chrono::milliseconds(100));
}

int64_t TestCluster::BeginUpgrade(const std::string& extname, const std::string& version,
                                  const std::string& options_json) const {
  return std::stoll(Scalar("SELECT safe_upgrade.begin($1, $2, $3::jsonb)", {extname, version, options_json}));
}

std::string TestCluster::Events(int64_t upgrade_id) const {
  auto conn = Connect();
  auto r = conn->Exec(
      "SELECT phase || ' ' || level || ' ' || message || coalesce(' ' || nullif(detail::text, '{}'), '') "
      "FROM safe_upgrade.events WHERE upgrade_id = $1::bigint ORDER BY id",
      {std::to_string(upgrade_id)});
  std::ostringstream out;
  for (const auto& row : r.rows) out << row[0].value_or("") << "\n";
  return out.str();
}

}  // namespace safe_upgrade::testing
