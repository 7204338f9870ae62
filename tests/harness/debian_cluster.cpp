// Debian-layout test clusters: pg_createcluster, pg_ctlcluster, pg_dropcluster.
#include "debian_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"

namespace fs = std::filesystem;

namespace safe_upgrade::testing {
namespace {

constexpr const char* kIdentMap = "safe_upgrade_tests";

ProcessOptions AsRoot() {
  ProcessOptions opt;
  opt.timeout = std::chrono::minutes(2);
  return opt;
}

// Debian's pg_hba.conf authenticates local connections by peer; the tests run as root and connect
// as postgres, which a map in the cluster's own pg_ident.conf allows. The line goes first, since
// the first matching line decides.
void LetRootConnectAsPostgres(const DebianCluster& cluster, const std::string& os_user) {
  std::string hba = JoinPath(cluster.ConfigDir(), "pg_hba.conf");
  std::string ident = JoinPath(cluster.ConfigDir(), "pg_ident.conf");
  std::string map = kIdentMap;
  AtomicWriteFile(
      hba, "# safe-upgrade tests run as root\nlocal all postgres peer map=" + map + "\n" + ReadFile(hba),
      0640);
  AtomicWriteFile(ident, ReadFile(ident) + map + " root postgres\n" + map + " postgres postgres\n", 0640);
  ChownTree(hba, os_user);
  ChownTree(ident, os_user);
}

void WriteAgentSettings(const DebianCluster& cluster, const SandboxInfo& info,
                        const SandboxOptions& options) {
  auto settings = SandboxAgentSettings(info);
  for (const auto& [k, v] : options.extra_settings) settings[k] = v;
  std::string text = "# safe-upgrade: the agent's settings (README, \"Install on a real server\")\n";
  for (const auto& [k, v] : settings) text += k + " = " + v + "\n";
  std::string path = JoinPath(JoinPath(cluster.ConfigDir(), "conf.d"), "safe_upgrade.conf");
  AtomicWriteFile(path, text, 0644);
  ChownTree(path, info.os_user);
}

}  // namespace

std::string DebianClustersUnavailable() {
  if (geteuid() != 0)
    return "pg_createcluster writes to /etc/postgresql and /var/lib/postgresql: run the tests as root";
  for (const char* tool : {"/usr/bin/pg_createcluster", "/usr/bin/pg_ctlcluster", "/usr/bin/pg_dropcluster"})
    if (access(tool, X_OK) != 0)
      return std::string("no ") + tool + " (Debian's postgresql-common is not installed)";
  if (!PathExists("/usr/lib/postgresql/15/bin/postgres"))
    return "PostgreSQL 15 is not installed in Debian's layout";
  return "";
}

namespace {

// The layout of an agent in dir serving the Debian cluster on port.
SandboxInfo DebianLayout(const std::string& dir, int port, const SandboxOptions& options, DebianCluster& cluster) {
  SandboxInfo info = SandboxLayout(dir, port);
  info.data_dir = cluster.DataDir();
  info.socket_dir = "/var/run/postgresql";
  AgentConfig& c = info.agent_config;
  c.data_directory = info.data_dir;
  c.socket_dir = info.socket_dir;
  c.control = cluster.Control();
  c.config_file = JoinPath(cluster.ConfigDir(), "postgresql.conf");
  c.server_log = "";  // pg_ctlcluster chooses the log; the agent is told none, as on a real server
  c.allow_root = options.allow_root_callers;
  cluster.log_file = "/var/log/postgresql/postgresql-" + cluster.version + "-" + cluster.name + ".log";
  return info;
}

// The agent's directories, binary and configuration.
void InstallAgent(const SandboxInfo& info, const SandboxOptions& options) {
  const std::string& dir = info.dir;
  EnsureDir(dir, 0755);
  EnsureDir(JoinPath(dir, "bin"), 0755);
  for (const char* sub : {"agent", "snapshots", "wal_archive", "work"}) EnsureDir(JoinPath(dir, sub), 0700);
  SandboxInstallAgent(info, options.agent_binary);
  AtomicWriteFile(info.agent_config_path, RenderAgentConfig(info.agent_config), 0644);
  ChownTree(dir, info.os_user);
}

// pg_createcluster on port, not started at boot (initdb's fsync skipped, as for every test
// cluster), with the agent's settings in conf.d and root let in as postgres.
void CreateConfiguredCluster(const DebianCluster& cluster, int port, const SandboxInfo& info,
                             const SandboxOptions& options) {
  RunChecked({"pg_createcluster", cluster.version, cluster.name, "-p", std::to_string(port), "--start-conf=manual",
              "--", "--no-sync"},
             AsRoot());
  WriteAgentSettings(cluster, info, options);
  LetRootConnectAsPostgres(cluster, info.os_user);
}

void PrintLogAndDrop(const SandboxInfo& info, const DebianCluster& cluster) {
  std::cerr << "--- " << cluster.log_file << " ---\n";
  try {
    std::cerr << ReadFile(cluster.log_file) << "\n";
  } catch (...) {
  }
  try {
    SandboxStopAgent(info, SIGTERM);
  } catch (...) {
  }
  DropDebianCluster(cluster);
}

}  // namespace

SandboxInfo CreateDebianCluster(const std::string& dir, const SandboxOptions& options,
                                DebianCluster& cluster) {
  int port = FindFreePort();
  SandboxInfo info = DebianLayout(dir, port, options, cluster);
  const AgentConfig& c = info.agent_config;
  InstallAgent(info, options);
  try {
    CreateConfiguredCluster(cluster, port, info, options);
    if (options.start_agent) SandboxStartAgent(info, options.agent_env);
    ServerControl(kPgBinDir, info.data_dir, c.control).Start();
    if (options.create_extension) PgConn(info.ConnInfo()).Exec("CREATE EXTENSION IF NOT EXISTS safe_upgrade");
  } catch (...) {
    PrintLogAndDrop(info, cluster);
    throw;
  }
  return info;
}

SandboxInfo CreateDebianStandby(const SandboxInfo& primary, const std::string& dir, const std::string& standby_name,
                                const SandboxOptions& options, DebianCluster& cluster) {
  int port = FindFreePort();
  SandboxInfo info = DebianLayout(dir, port, options, cluster);
  info.agent_config.role = "standby";
  InstallAgent(info, options);
  try {
    CreateConfiguredCluster(cluster, port, info, options);
    // Its own data directory gives way to a copy of the primary's.
    RemoveTree(info.data_dir);
    ProcessOptions as_service = AsRoot();
    as_service.run_as = info.os_user;
    RunChecked({JoinPath(kPgBinDir, "pg_basebackup"), "--pgdata=" + info.data_dir, "--wal-method=stream",
                "--checkpoint=fast", "--write-recovery-conf", "--create-slot", "--slot=" + standby_name,
                "--no-sync", "--dbname=" + ConnInfo(primary.socket_dir, primary.port, "postgres", "postgres", standby_name)},
               as_service);
    if (options.start_agent) SandboxStartAgent(info, options.agent_env);
    ServerControl(kPgBinDir, info.data_dir, info.agent_config.control).Start();
  } catch (...) {
    PrintLogAndDrop(info, cluster);
    throw;
  }
  return info;
}

void DropDebianCluster(const DebianCluster& cluster) {
  if (cluster.name.empty()) return;
  auto dropped = RunProcess({"pg_dropcluster", "--stop", cluster.version, cluster.name}, AsRoot());
  if (!dropped.Ok() && PathExists(cluster.ConfigDir()))
    std::cerr << "pg_dropcluster " << cluster.name << " failed: " << dropped.err << "\n";
  // pg_dropcluster leaves files it did not create (conf.d/safe_upgrade.conf) and their directory;
  // a rollback leaves the replaced data directory aside, and a parked target may be left over.
  std::vector<std::string> leftovers = {cluster.ConfigDir()};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(cluster.DataDir()).parent_path(), ec))
    if (entry.path().filename().string().rfind(cluster.name + ".", 0) == 0) leftovers.push_back(entry.path());
  for (const auto& path : leftovers) {
    try {
      if (PathExists(path)) RemoveTree(path);
    } catch (const std::exception& e) {
      std::cerr << "could not remove " << path << ": " << e.what() << "\n";
    }
  }
}

}  // namespace safe_upgrade::testing
