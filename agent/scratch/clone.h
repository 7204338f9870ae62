// Ephemeral clones for dry runs: a copy of a snapshot, started as an isolated primary (its own
// port and socket directory, no TCP, no archiving, never following production, the scheduler
// off), used for one upgrade attempt and then destroyed.
//
// Every clone is journaled (the upgrade's "clones" list) before its directory exists, so that an
// agent that crashed mid-dry-run finds and removes it at its next start (clone_removal.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"
#include "postgres/copied_conf.h"
#include "postgres/pg_conn.h"
#include "scratch/clone_removal.h"
#include "scratch/scratch_server.h"

namespace safe_upgrade {

class Clone {
 public:
  // Nothing happens until Create(). The clone lives in <work_dir>/clones/dryrun-<upgrade id>. It
  // copies the snapshot's data directory, or source_data_dir (the snapshot job's own check of a
  // snapshot not yet published).
  Clone(JobContext& ctx, std::string snapshot_id, std::string source_data_dir = "");
  // Tears down whatever exists (never throws).
  ~Clone();
  Clone(const Clone&) = delete;
  Clone& operator=(const Clone&) = delete;

  // Journals the clone, checks free space and copies the snapshot (reporting progress between
  // progress_from and progress_to), then writes the clone's isolation settings.
  void Create(double progress_from = 0.0, double progress_to = 0.5);
  // Starts it with pg_ctl and waits until it has recovered to consistency and accepts connections.
  void Start();
  // Reads the isolation settings back from the running clone; throws JobFailure naming the first
  // one that is wrong. Returns {setting: value}.
  nlohmann::json VerifyIsolation();
  // To database datname of the clone (default: the control database).
  std::unique_ptr<PgConn> Connect(const std::string& application_name, const std::string& datname = "") const;
  // Stops (immediate: it is scratch), removes the directory and the journal entry. Idempotent.
  void Teardown();

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& socket_dir() const { return socket_dir_; }
  const std::string& log_file() const { return log_file_; }
  // The last lines of the clone's server log, for error messages.
  std::string LogTail(size_t max_bytes = 3000) const;
  nlohmann::json ToJson() const;

 private:
  void MakeRoom(uint64_t needed);
  void CopySnapshot(double progress_from, double progress_to);
  void RestoreFromStanza(const nlohmann::json& meta, double progress_to);
  void WriteSettings();
  JobContext& ctx_;
  std::string snapshot_id_, source_data_dir_;
  std::string dir_, data_dir_, socket_dir_, log_file_;
  int port_ = 0;
  bool journaled_ = false;
};

}  // namespace safe_upgrade
