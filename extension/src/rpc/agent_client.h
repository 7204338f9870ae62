// The worker's client for the agent, behind a plain C++ interface: no gRPC, absl or PostgreSQL
// types cross this header, so it can be included next to postgres.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/job_kinds.h"

namespace safe_upgrade {

// How a call failed, by the agent's status code (gRPC's doc/statuscodes.md; the proto lists which
// RPC returns which). At most one flag is set; none for the codes a caller cannot act on
// (INTERNAL, PERMISSION_DENIED, ...), which only the message describes.
struct AgentCallError {
  bool ok = true;
  // No answer from the agent: it cannot be reached (UNAVAILABLE from the transport), or it did
  // not answer within the deadline (DEADLINE_EXCEEDED; the call may still have taken effect, so
  // only idempotent calls are repeated, and StartJob is).
  bool unreachable = false;
  // UNAVAILABLE from the agent itself: it is up but cannot serve the call for a moment (its
  // catalog cannot be read while the server restarts); retry the call as it is.
  bool unavailable = false;
  bool not_found = false;  // NOT_FOUND: no such upgrade or job
  bool busy = false;       // ABORTED: another job holds the agent; retry the step later
  bool refused = false;    // FAILED_PRECONDITION: cannot succeed until the state changes
  bool invalid = false;    // INVALID_ARGUMENT: a malformed request (a bug of the caller)
  std::string message;
};

struct AgentPing {
  std::string agent_version, api_version, data_directory, active_job_id;
  uint64_t system_identifier = 0;
  uint64_t snapshot_free_bytes = 0, disk_reserve_bytes = 0, data_free_bytes = 0;
  bool wal_archive_writable = false;
  std::string wal_archive_newest, wal_archive_oldest, wal_needed_from;
  uint64_t wal_archive_files = 0, wal_archive_bytes = 0;
  bool wal_archive_reported = false;
  // agent.snapshot_method as configured, what it resolves to, why; empty from older agents.
  std::string snapshot_method_configured, snapshot_method, snapshot_method_reason;
  bool snapshot_method_possible = true;
  // How old the agent's measurement of the host facts above is.
  uint64_t facts_age_ms = 0;
  // The backend: "local" or "pgbackrest" ("" from older agents, which know only "local"); for
  // pgbackrest the stanza, the last `pgbackrest check` (whether one ran, passed, its message and
  // age) and the stanza's summary (a JSON object, see the proto).
  std::string backend_kind, backend_stanza, backend_problem, backend_summary_json;
  bool backend_checked = false, backend_check_ok = false;
  uint64_t backend_checked_age_ms = 0;
  // "primary" or "standby" ("" from older agents); on a primary, its standby agents as last
  // pinged (a JSON array, see the proto; "" from older agents); pg_rewind in its bin_dir.
  std::string role, standbys_json;
  bool pg_rewind_available = false;
  std::string stale_libraries_json;  // "" from older agents
  bool standby_signal = false;  // the agent's data directory holds standby.signal
};

struct AgentEvent {
  int64_t seq = 0;
  std::string at, phase, level, message, detail_json;
};

struct AgentJob {
  std::string job_id, error, result_json;
  std::optional<JobKind> kind;  // std::nullopt: a kind this build does not know
  int64_t upgrade_id = 0;
  // "running", "succeeded", "failed"
  std::string state;
  std::vector<AgentEvent> events;
  int64_t next_cursor = 0;
  double progress = -1;
  // For a failed job: how it failed (kNone otherwise).
  JobFailureKind failure = JobFailureKind::kNone;
};

struct AgentJournal {
  std::string apply = "none", rollback = "none", rollback_step, snapshot_id;
};

// A standby agent's answer on the upgrade's target files (CheckStandbyFiles in the proto).
struct AgentStandbyFiles {
  std::string extname, to_version, data_directory, share_dir, lib_dir;
  bool ready = false;
  std::vector<std::string> problems;
};

// Client certificate for a TCP agent (PEM file paths). Empty: plain channel (Unix socket).
struct AgentTls {
  std::string ca_file, cert_file, key_file;
  bool Enabled() const { return !ca_file.empty(); }
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  // address: "unix:/path/agent.sock" or "host:port" (TLS with a client certificate). The channel
  // (and gRPC's threads) is created with every signal blocked, so gRPC threads never take the
  // server's signals. Throws std::runtime_error when the TLS files cannot be read.
  static std::unique_ptr<AgentClient> Create(const std::string& address, int deadline_ms = 5000,
                                             const AgentTls& tls = {});

  virtual AgentCallError Ping(AgentPing& out) = 0;
  // Starts the job of kind for the upgrade (or finds it running); job_id is "<kind name>-<id>".
  virtual AgentCallError StartJob(JobKind kind, int64_t upgrade_id, std::string& job_id) = 0;
  virtual AgentCallError GetJob(const std::string& job_id, int64_t cursor, AgentJob& out) = 0;
  virtual AgentCallError GetJournal(int64_t upgrade_id, AgentJournal& out) = 0;
  // The extension's version now in each database of the upgrade ("" where it is not installed).
  virtual AgentCallError GetInstalledVersions(int64_t upgrade_id,
                                              std::map<std::string, std::string>& out) = 0;
  // A standby agent's check of the upgrade's target files on its node.
  virtual AgentCallError CheckStandbyFiles(int64_t upgrade_id, AgentStandbyFiles& out) = 0;
  virtual const std::string& address() const = 0;
};

}  // namespace safe_upgrade
