// The pgBackRest commands the agent runs for backend.kind = "pgbackrest": check, backup, info,
// verify, restore, archive-get and repo-ls, always as argv (never a shell) with the configured
// stanza and configuration file, and with pgBackRest's errors on stderr so that a failure names
// pgBackRest's own message.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/process.h"

namespace safe_upgrade {

class PgBackRestError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One backup of the stanza, as `pgbackrest info --output=json` describes it.
struct PgBackRestBackup {
  std::string label, type, prior;  // type: "full", "diff" or "incr"; prior: the backup it builds on
  std::string start_lsn, stop_lsn, archive_start, archive_stop;
  uint32_t timeline = 0;  // from the first WAL segment's name
  uint64_t size_bytes = 0, repo_bytes = 0, repo_delta_bytes = 0;
  int64_t stopped_at = 0;  // Unix time
  bool error = false;      // pgBackRest found checksum errors while taking it
  nlohmann::json ToJson() const;
};

// What the stanza looks like: its status, repositories and backups.
struct PgBackRestStanza {
  bool ok = false;
  int status_code = -1;  // 0 ok, 2 no valid backups, 6 a backup or expire running; others: errors
  std::string status;    // pgBackRest's status message ("ok", "no valid backups", ...)
  // Whether the repositories could be read: their backups are then the whole truth.
  bool Readable() const { return status_code == 0 || status_code == 2 || status_code == 6; }
  uint64_t system_identifier = 0;
  std::string archive_id, archive_max;  // e.g. "15-1" and the newest archived segment
  nlohmann::json repos = nlohmann::json::array();
  std::vector<PgBackRestBackup> backups;  // oldest first
  const PgBackRestBackup* Find(const std::string& label) const;
  nlohmann::json ToJson() const;
};

// Which backup to restore, and where. Restores are --type=none: pgBackRest writes no recovery
// settings (the WAL copied into the backup reaches consistency; the caller writes its own).
struct PgBackRestRestore {
  std::string label, dest;
};

class PgBackRest {
 public:
  explicit PgBackRest(const AgentConfig& config);

  // `pgbackrest check`: the archive works for this stanza (it switches WAL and waits for it).
  void Check(std::chrono::seconds timeout) const;
  PgBackRestStanza Info() const;
  // A backup of backup.backup_type (pgBackRest takes a full one when none exists yet), with the
  // WAL it needs for consistency copied into it; returns it as info describes it.
  PgBackRestBackup Backup(const std::string& type, bool fast_checkpoint, std::chrono::seconds timeout) const;
  // `pgbackrest verify --set`: the backup's files and the WAL it needs, checked in the repository.
  void Verify(const std::string& label, std::chrono::seconds timeout) const;
  // Restores label into dest (created empty, mode 0700), with no recovery settings of its own.
  void Restore(const PgBackRestRestore& restore, std::chrono::seconds timeout) const;
  // Fetches one archived file (a segment or a history file) to dest; false when it is not archived.
  bool ArchiveGet(const std::string& name, const std::string& dest) const;
  // The archived WAL segment names (24 characters) of one timeline, from first to last inclusive.
  std::vector<std::string> ArchivedSegments(const std::string& archive_id, uint32_t timeline,
                                            const std::string& first, const std::string& last) const;
  // restore_command for a server recovering in data_dir: archive-get, every word shell-quoted.
  std::string RestoreCommand(const std::string& data_dir) const;
  // For messages: "pgBackRest stanza \"main\"".
  std::string Describe() const;

 private:
  std::vector<std::string> Argv(const std::string& command, std::vector<std::string> options,
                                std::vector<std::string> args = {}) const;
  ProcessResult Run(const std::string& command, std::vector<std::string> options,
                    std::chrono::seconds timeout, std::vector<std::string> args = {}) const;

  const AgentConfig& config_;
};

// Parses `pgbackrest info --output=json` for one stanza (exposed for the unit tests).
PgBackRestStanza ParsePgBackRestInfo(const std::string& json_text, const std::string& stanza);

}  // namespace safe_upgrade

namespace safe_upgrade {

// A snapshot (snapshot.json) that is a pgBackRest backup rather than a directory of files.
bool IsPgBackRestSnapshot(const nlohmann::json& meta);
// Restores such a snapshot into dest (empty or absent), as the clone, the parked rollback target
// and the cold rollback need it: files only, no recovery settings, consistent from the WAL copied
// into the backup. Throws PgBackRestError when the agent's backend is not that stanza.
void RestorePgBackRestSnapshot(const AgentConfig& config, const nlohmann::json& meta,
                               const std::string& dest);

}  // namespace safe_upgrade
