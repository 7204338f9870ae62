// The agent's configuration: which cluster it serves and where it keeps snapshots, WAL and its
// journal. Read from a TOML file; every key is documented in docs/configuration.md.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace safe_upgrade {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct AgentConfig {
  // [cluster]
  std::string data_directory;
  std::string bin_dir;     // PostgreSQL's binaries (pg_ctl, pg_basebackup, ...)
  std::string socket_dir;  // the server's unix_socket_directories entry
  int port = 5432;
  std::string database = "postgres";  // the database holding the safe_upgrade extension
  std::string db_user;                // role the agent connects as (default: OS user)
  std::string control = "pg_ctl";     // "pg_ctl", "pg_ctlcluster 15 main" or "systemd postgresql@15-main"
  std::string config_file;            // postgresql.conf when it lives outside the data directory
  std::string server_log;             // pg_ctl start -l target (pg_ctl control only)

  // [agent]
  std::string listen;  // "unix:/path/agent.sock" or "host:port" (TLS required)
  std::string snapshot_dir;
  std::string wal_archive_dir;
  std::string work_dir;  // clones, journal
  std::string log_file;  // empty: stderr
  std::string log_level = "info";
  int snapshot_retention = 3;      // snapshots kept (in-flight upgrades' snapshots always kept)
  uint64_t disk_reserve_mb = 256;  // free space that must remain after a copy
  std::string backup_max_rate;     // pg_basebackup --max-rate, e.g. "200M"; empty: unthrottled
  bool allow_root = false;         // accept root as a caller on the unix socket
  int job_timeout_s = 3600;
  // How snapshots are taken: "reflink" (pg_backup_start/stop and copy-on-write clones of the
  // files), "basebackup" (pg_basebackup) or "auto" (reflink where the probe says it works).
  std::string snapshot_method = "auto";
  // The checkpoint a snapshot starts from: "fast" (immediate: the snapshot starts at once, and
  // production's writes compete with the flush for a moment) or "spread" (paced like a scheduled
  // checkpoint, by checkpoint_completion_target: gentle on a busy server, but the snapshot may
  // wait up to that fraction of checkpoint_timeout before it starts copying).
  std::string backup_checkpoint = "fast";
  // The agent's executable as PostgreSQL runs it in restore_command (wal-fetch). A path, not the
  // running image: a package upgrade replaces the file under it. Empty in the file: the path the
  // agent was started from (see ResolveStartedFrom), resolved once at start.
  std::string agent_binary;

  // [backend]: where snapshots and the WAL a rollback replays live. "local": the agent's own
  // snapshots in snapshot_dir and its own WAL archive (archive_command = the agent's wal-push).
  // "pgbackrest": the user's pgBackRest stanza; a snapshot is a backup of it, and clones,
  // rollback targets and cold rollbacks are restored from it (docs/configuration.md).
  struct Backend {
    std::string kind = "local";
    std::string stanza;                 // pgbackrest: the stanza of this cluster
    std::string config;                 // pgbackrest: its configuration file ("" = its default)
    std::string binary = "pgbackrest";  // pgbackrest: the executable (PATH is searched)
    std::string backup_type = "incr";   // pgbackrest: "incr", "diff" or "full" for a snapshot
    bool backup_after_success = true;   // pgbackrest: a fresh backup once an upgrade succeeded
    bool IsPgBackRest() const { return kind == "pgbackrest"; }
  } backend;

  // [agent] role: "primary" (the node the worker talks to; it rolls back and calls its standbys'
  // agents) or "standby" (next to a streaming standby: it confirms the target's files are
  // installed here and re-syncs its standby after the primary's rollback, when asked).
  std::string role = "primary";
  bool IsStandby() const { return role == "standby"; }
  // [[standby]] (primary only): each streaming standby's agent. name is the standby's
  // application_name in pg_stat_replication; agent its address ("unix:/path" or "host:port",
  // reached with this agent's [tls] client certificate).
  struct StandbyAgent {
    std::string name, agent;
  };
  std::vector<StandbyAgent> standbys;

  // [patroni] (primary only): the REST API of the Patroni member that manages this server. The
  // agent pauses Patroni (maintenance mode) from the upgrade's scheduled step, before the restore
  // point, until the upgrade has ended, so that no failover or restart fights the apply or the
  // rollback. Empty: the cluster is not managed by Patroni.
  struct Patroni {
    std::string rest_api;  // "http://127.0.0.1:8008"
    std::string ca_file;   // https: the CA that signs Patroni's certificate ("" = the system's)
  } patroni;

  // [tls] (for TCP listening, and for calling standby agents over TCP)
  std::string tls_ca_file, tls_cert_file, tls_key_file;
  bool insecure_tcp = false;  // tests only

  std::string source_path;  // the file this came from

  std::string JournalDir() const;
  std::string ClonesDir() const;
  // To the control database (`database`), or to datname.
  std::string ConnInfo(const std::string& application_name = "safe-upgrade-agent",
                       const std::string& datname = "") const;
};

// Parses and validates; throws ConfigError naming the offending key.
AgentConfig LoadAgentConfig(const std::string& path);
AgentConfig ParseAgentConfig(const std::string& toml_text, const std::string& source_path = "<string>");
// Validation of paths and values (the data directory must be a PostgreSQL data directory...).
// data_directory_may_be_missing: only while a journaled rollback has moved it aside.
void ValidateAgentConfig(const AgentConfig& config, bool data_directory_may_be_missing = false);
// The absolute path a process was started as (argv[0], made absolute against the working
// directory, or looked up in PATH), without resolving symbolic links: a packaged binary's stable
// name, not a versioned file that an upgrade removes. "" when it cannot be found.
std::string ResolveStartedFrom(const std::string& argv0);
// The TOML text for a config (used by the sandbox and the tests to write one).
std::string RenderAgentConfig(const AgentConfig& config);

}  // namespace safe_upgrade
