// The two ways the snapshot job takes its backup (agent.snapshot_method): pg_basebackup checked by
// pg_verifybackup (basebackup_snapshot.cpp), or pg_backup_start/stop around reflink copies of the
// files, checked by replaying its WAL on a throwaway clone (reflink_snapshot.cpp). Both leave a
// startable plain backup in the same layout, which the job (snapshot.cpp) then publishes.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "base/config.h"
#include "base/job.h"
#include "base/process.h"
#include "postgres/pgbackrest.h"
#include "postgres/tablespaces.h"

namespace safe_upgrade {

// Where a snapshot's backup is written before it is published: <dir>/data.partial, and its
// tablespaces in <dir>/tablespaces.partial/<oid> (the data's pg_tblspc links point there).
struct SnapshotTarget {
  std::string snapshot_id, dir, partial, tablespaces_partial;
  uint64_t system_identifier = 0;  // of the cluster served
};

// What a method hands back: the backup's WAL range and what proved it good.
struct BackupTaken {
  std::string method;  // "basebackup" or "reflink"
  std::string start_lsn, stop_lsn;
  uint32_t timeline = 0;
  // {"method": "pg_verifybackup" | "wal_and_clone", ...}: recorded in snapshot.json.
  nlohmann::json verification = nlohmann::json::object();
  // Timings and counts for the job's last event and snapshot.json.
  nlohmann::json detail = nlohmann::json::object();
};

BackupTaken TakeBasebackup(JobContext& ctx, const SnapshotTarget& target, const ExternalLayout& layout);
BackupTaken TakeReflinkSnapshot(JobContext& ctx, const SnapshotTarget& target, const ExternalLayout& layout);

// backend.kind = "pgbackrest": the snapshot is a backup in the stanza's repositories
// (pgbackrest_snapshot.cpp), checked by pgbackrest check before and verify after.
struct PgBackRestTaken {
  PgBackRestBackup backup;
  double backup_s = 0, verify_s = 0;
};
PgBackRestTaken TakePgBackRestSnapshot(JobContext& ctx, uint64_t system_identifier);

// Shared by both: the environment PostgreSQL's tools run in (untranslated messages, low priority,
// the job's timeout), seconds, and one decimal.
ProcessOptions SnapshotToolOptions(const AgentConfig& config);
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
inline double Round1(double v) { return static_cast<double>(static_cast<int64_t>(v * 10 + 0.5)) / 10; }

}  // namespace safe_upgrade
