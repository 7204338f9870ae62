// Test harness: a throwaway PostgreSQL 15 cluster (initdb in a temp dir, free port, own socket
// dir, WAL archiving through the agent, the extension preloaded and created) with an agent,
// built on the sandbox, or one in Debian's layout (debian_cluster.h). Runs them as the postgres OS user when
// the tests run as root, always tears down, prints the logs when a test failed, and fails a test whose server
// log shows a backend "terminated by signal".
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/process.h"
#include "debian_cluster.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "sandbox/sandbox.h"

namespace safe_upgrade::testing {

struct ClusterOptions {
  std::map<std::string, std::string> settings;   // extra postgresql.conf lines
  std::map<std::string, std::string> agent_env;  // e.g. {"SAFE_UPGRADE_FAILPOINT", "..."}
  bool start_agent = true;
  bool create_extension = true;
  // Tests run as root and call the agent directly; production agents refuse root by default.
  bool allow_root_callers = true;
  // Set when a test kills processes on purpose, so "terminated by signal" is expected.
  bool expect_crashes = false;
  // A pg_createcluster cluster (configuration in /etc, controlled with pg_ctlcluster) instead of
  // an initdb directory; needs root (check DebianClustersUnavailable() first). Dropped afterwards.
  bool debian_cluster = false;
  // Where the cluster's temporary root directory is made (everything of the sandbox lives in it:
  // data directory, snapshots, WAL archive, work directory); a filesystem a test mounted.
  std::string root_parent = "/tmp";
  // "pgbackrest": the sandbox's stanza in a posix repository inside the root, or in the object
  // store that repo_options name ([global] lines, e.g. an S3 server's repo1-* options).
  std::string backend = "local";
  std::vector<std::string> repo_options;
  // Streaming standbys with their own agents (SandboxOptions.standbys), and postgresql.conf lines
  // for them only.
  int standbys = 0;
  std::map<std::string, std::string> standby_settings;
  std::string standby_bin_dir;  // SandboxOptions.standby_bin_dir
};

class TestCluster {
 public:
  explicit TestCluster(ClusterOptions options = {});
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  const SandboxInfo& info() const { return info_; }
  const std::string& root() const { return root_; }
  // The pg_createcluster cluster (options debian_cluster), else a DebianCluster without a name.
  const DebianCluster& debian() const { return debian_; }
  std::string ConnInfo(const std::string& dbname = "postgres") const { return info_.ConnInfo(dbname); }
  std::unique_ptr<PgConn> Connect(const std::string& dbname = "postgres") const;
  // Runs one statement on a fresh connection and returns the first value ("" for NULL/none).
  std::string Scalar(const std::string& sql,
                     const std::vector<std::optional<std::string>>& params = {}) const;
  void Exec(const std::string& sql) const;

  void StartAgent(const std::map<std::string, std::string>& env = {});
  // Until the worker has reached the agent since now (it pings it every few seconds): begin()
  // refuses an agent the worker last saw unreachable, e.g. right after a restart.
  void WaitForWorkerToReachAgent() const;
  void StopAgent();  // SIGTERM
  void KillAgent();  // SIGKILL
  bool AgentRunning() const;
  void StopServer(const std::string& mode = "fast");
  void StartServer();
  void KillPostmaster();  // SIGKILL, as a crash
  bool ServerRunning() const;

  std::string ServerLog() const;
  std::string AgentLog() const;
  // Runs a command as the service user (postgres when root), e.g. psql.
  ProcessResult RunAsServiceUser(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& env = {}) const;
  // A scratch directory inside the cluster's root that the service user can write.
  std::string ScratchDir(const std::string& name) const;

  // Polls status until the upgrade reaches a terminal state; returns it (or "timeout").
  std::string WaitForTerminalState(int64_t upgrade_id,
                                   std::chrono::seconds timeout = std::chrono::seconds(300)) const;
  // Polls until the upgrade's state equals state.
  bool WaitForState(int64_t upgrade_id, const std::string& state,
                    std::chrono::seconds timeout = std::chrono::seconds(300)) const;
  // safe_upgrade.begin(ext, version, options) on a fresh connection; returns the upgrade id.
  int64_t BeginUpgrade(const std::string& extname, const std::string& version,
                       const std::string& options_json = "{}") const;
  // All events of an upgrade, one per line ("phase level message").
  std::string Events(int64_t upgrade_id) const;
  void ExpectCrashes() { options_.expect_crashes = true; }

 private:
  ServerControl Server() const;

  ClusterOptions options_;
  std::string root_;
  SandboxInfo info_;
  DebianCluster debian_;  // its name is empty unless options_.debian_cluster
  std::string server_log_;
};

// Polls pred every interval until it is true or the timeout passes.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval = std::chrono::milliseconds(50));

// Whether the command runs and exits 0 within 30 s (a tool's presence: "patroni --version").
bool CommandRuns(const std::vector<std::string>& argv);

// The directory holding the built binaries (safe-upgrade, safe-upgrade-agent).
std::string BuildDir();
// Server's extension/fixture availability: true when pg_available_extensions lists it.
bool ExtensionAvailable(PgConn& conn, const std::string& name);

}  // namespace safe_upgrade::testing
