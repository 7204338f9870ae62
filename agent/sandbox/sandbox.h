// A sandbox: a local PostgreSQL cluster with WAL archiving through the agent, the extension
// preloaded and created, and an agent serving it, all inside one directory. `safe-upgrade
// sandbox` and the test harness both build on it.
//
// DIR holds data/, postgres.log, agent.log, agent.pid, agent.toml, env, bin/ (a copy of the
// agent binary, so that the postgres OS user can run it wherever the build lives), run/ (the
// server's socket), agent/ (the agent's socket, 0700), snapshots/, wal_archive/, work/.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/config.h"

namespace safe_upgrade {

struct SandboxOptions {
  int port = 0;                                       // 0: keep the recorded port, or pick a free one
  std::string agent_binary;                           // default: safe-upgrade-agent next to this executable
  std::map<std::string, std::string> extra_settings;  // postgresql.conf lines (values already quoted)
  std::map<std::string, std::string> agent_env;       // e.g. SAFE_UPGRADE_FAILPOINT for tests
  bool start_agent = true;
  // Let root call the agent on its socket (tests that drive the agent directly run as root).
  bool allow_root_callers = false;
  bool create_extension = true;
  // "local" (the agent's own snapshots and WAL archive) or "pgbackrest": a stanza "sandbox" in a
  // repository inside DIR/pgbackrest (or where repo_options point), archived by pgBackRest.
  // Chosen when the sandbox is created; an existing sandbox keeps its backend.
  std::string backend = "local";
  // pgbackrest: [global] lines replacing the posix repository (e.g. an S3 server's repo1-*).
  std::vector<std::string> repo_options;
  // Streaming standbys on loopback, DIR/standby1 ... DIR/standbyN, each a pg_basebackup of the
  // primary (through a physical slot named after it) with its own agent (agent.role =
  // "standby"), which the primary's agent lists. Chosen when the sandbox is created.
  int standbys = 0;
  // Extra postgresql.conf lines for the standbys only (after extra_settings).
  std::map<std::string, std::string> standby_settings;
  // The PostgreSQL binaries the standbys run (and their agents use); default: the build's. A
  // test gives a copy of the installation that lacks a file, as a node installed apart would.
  std::string standby_bin_dir;
  // Called with short progress lines ("initdb", "server started", ...).
  void (*progress)(const std::string&) = nullptr;
};

struct SandboxInfo {
  std::string dir, data_dir, socket_dir, agent_socket, agent_config_path, env_path, os_user;
  int port = 0;
  AgentConfig agent_config;
  // The sandbox's standbys (SandboxOptions.standbys), each laid out like a sandbox of its own.
  std::vector<SandboxInfo> standbys;
  std::string ConnInfo(const std::string& dbname = "postgres") const;
};

class SandboxError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Creates the sandbox, or (re)starts whatever of it is not running. Refuses a non-empty
// directory that is not a sandbox, touching nothing.
SandboxInfo SandboxUp(const std::string& dir, const SandboxOptions& options = {});
// Stops the agent and the server. Keeps the files.
void SandboxDown(const std::string& dir);
// Reads an existing sandbox's layout; throws SandboxError when dir is not one.
SandboxInfo SandboxOpen(const std::string& dir);
// "PGHOST=... PGPORT=... PGUSER=... PGDATABASE=..." lines.
std::string SandboxEnvLines(const SandboxInfo& info, bool with_export);

// The layout of a sandbox in abs_dir (an absolute path), without touching the disk.
SandboxInfo SandboxLayout(const std::string& abs_dir, int port, const std::string& backend = "local");
// Copies the agent's binary to info.agent_config.agent_binary (DIR/bin/safe-upgrade-agent).
void SandboxInstallAgent(const SandboxInfo& info, const std::string& source);
// The postgresql.conf settings that tie a server to the sandbox's agent: WAL archiving through its
// wal-push (or pgBackRest's archive-push), the extension preloaded, the worker pointed at the agent's socket
// (values quoted).
std::map<std::string, std::string> SandboxAgentSettings(const SandboxInfo& info);

// The pgbackrest backend (sandbox_pgbackrest.cpp): DIR/pgbackrest.conf with the stanza
// "sandbox", and the stanza created once the server runs.
void WriteSandboxStanzaConfig(const SandboxInfo& info, const std::vector<std::string>& repo_options);
void CreateSandboxStanza(const SandboxInfo& info);

// Standbys (sandbox_standbys.cpp). The layout of standby k (1-based) of a primary sandbox.
SandboxInfo SandboxStandbyLayout(const SandboxInfo& primary, int k, int port);
// Creates the standbys that do not exist yet (the primary must run), then starts whatever of them
// is not running.
void SandboxUpStandbys(SandboxInfo& primary, const SandboxOptions& options);
void SandboxDownStandbys(const SandboxInfo& primary);

// Agent process control inside a sandbox.
void SandboxStartAgent(const SandboxInfo& info, const std::map<std::string, std::string>& env = {});
// Sends the signal (SIGTERM: clean stop, SIGKILL: crash) and waits until the agent is gone.
void SandboxStopAgent(const SandboxInfo& info, int signal_number);
bool SandboxAgentRunning(const SandboxInfo& info);
long SandboxAgentPid(const SandboxInfo& info);

}  // namespace safe_upgrade
