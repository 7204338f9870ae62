// A sandbox's streaming standbys: DIR/standbyK holds the same layout as a sandbox (data/, run/,
// agent/, agent.toml, env, logs), its data directory a pg_basebackup of the primary through the
// physical slot "standbyK", its agent configured with agent.role = "standby". The primary's agent
// lists every standby agent ([[standby]]).
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "postgres/socket_only.h"
#include "sandbox/sandbox.h"

namespace safe_upgrade {
namespace {

std::string StandbyName(int k) { return "standby" + std::to_string(k); }

void WaitUntilStreaming(const SandboxInfo& primary, const std::string& name) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      PgConn conn(primary.ConnInfo());
      if (!conn.Exec("SELECT 1 FROM pg_catalog.pg_stat_replication WHERE application_name = $1 AND state = "
                     "'streaming'",
                     {name})
               .Empty())
        return;
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw SandboxError(name + " does not stream from the primary after 60 s; see its postgres.log");
}

// pg_basebackup of the primary, as the service user, with standby.signal and primary_conninfo
// (application_name = the standby's name) and a physical slot of the same name.
void CloneFromPrimary(const SandboxInfo& primary, const SandboxInfo& standby, const std::string& name) {
  {
    PgConn conn(primary.ConnInfo());
    // A slot left by an earlier attempt that failed midway.
    conn.Exec("SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots "
              "WHERE slot_name = $1 AND NOT active",
              {name});
  }
  ProcessOptions opt;
  opt.run_as = standby.os_user;
  std::string conninfo = ConnInfo(primary.socket_dir, primary.port, "postgres", "postgres", name);
  auto r = RunProcess({JoinPath(kPgBinDir, "pg_basebackup"), "--pgdata=" + standby.data_dir, "--wal-method=stream",
                       "--checkpoint=fast", "--write-recovery-conf", "--create-slot", "--slot=" + name,
                       "--no-sync", "--dbname=" + conninfo},
                      opt);
  if (!r.Ok()) throw SandboxError("could not clone " + name + " from the primary: " + r.Describe("pg_basebackup"));
}

}  // namespace

SandboxInfo SandboxStandbyLayout(const SandboxInfo& primary, int k, int port) {
  SandboxInfo standby = SandboxLayout(JoinPath(primary.dir, StandbyName(k)), port, "local");
  standby.agent_config.role = "standby";
  return standby;
}

void SandboxUpStandbys(SandboxInfo& primary, const SandboxOptions& options) {
  // The primary's copy of the agent binary, installed just before.
  const std::string& agent_source = primary.agent_config.agent_binary;
  for (size_t i = 0; i < primary.standbys.size(); ++i) {
    SandboxInfo& standby = primary.standbys[i];
    const std::string name = StandbyName(static_cast<int>(i) + 1);
    if (!options.standby_bin_dir.empty()) standby.agent_config.bin_dir = options.standby_bin_dir;
    if (!PathExists(JoinPath(standby.data_dir, "PG_VERSION"))) {
      if (options.progress) options.progress("cloning " + name + " from the primary");
      EnsureDir(standby.dir, 0755);
      for (const char* sub : {"run", "bin"}) EnsureDir(JoinPath(standby.dir, sub), 0755);
      for (const char* sub : {"agent", "snapshots", "work", "wal_archive"}) EnsureDir(JoinPath(standby.dir, sub), 0700);
      ChownTree(standby.dir, standby.os_user);
      CloneFromPrimary(primary, standby, name);
    }
    if (!SandboxAgentRunning(standby)) SandboxInstallAgent(standby, agent_source);
    std::map<std::string, std::string> settings = SandboxAgentSettings(standby);
    auto socket_only = SocketOnlySettings(standby.port, standby.socket_dir);
    settings.insert(socket_only.begin(), socket_only.end());
    settings["log_line_prefix"] = "'%m [%p] %q%a '";
    for (const auto& [k, v] : options.extra_settings) settings[k] = v;
    for (const auto& [k, v] : options.standby_settings) settings[k] = v;
    WriteManagedSettings(standby.data_dir, settings);
    standby.agent_config.allow_root = options.allow_root_callers;
    AtomicWriteFile(standby.agent_config_path, RenderAgentConfig(standby.agent_config), 0644);
    {
      std::ofstream out(standby.env_path, std::ios::trunc);
      out << SandboxEnvLines(standby, false);
    }
    ChownTree(standby.dir, standby.os_user);
    if (options.start_agent && !SandboxAgentRunning(standby)) SandboxStartAgent(standby, options.agent_env);
    ServerControl server(standby.agent_config.bin_dir, standby.data_dir, "pg_ctl", standby.os_user,
                         standby.agent_config.server_log);
    if (!server.Running()) {
      if (options.progress) options.progress("starting " + name + " on port " + std::to_string(standby.port));
      server.Start();
    }
    WaitUntilStreaming(primary, name);
  }
}

void SandboxDownStandbys(const SandboxInfo& primary) {
  for (const auto& standby : primary.standbys) {
    SandboxStopAgent(standby, SIGTERM);
    ServerControl server(kPgBinDir, standby.data_dir, "pg_ctl", standby.os_user, standby.agent_config.server_log);
    if (PathExists(standby.data_dir)) server.Stop("fast");
  }
}

}  // namespace safe_upgrade
