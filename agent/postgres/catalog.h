// What the agent reads from (and, after a rollback, writes to) the safe_upgrade catalog of the
// cluster it serves. Requests carry only an upgrade id; everything else comes from here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/config.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

// An extension that requires the upgraded one and is upgraded with it, right after it in the
// same transaction, to the same target version (upgrade_databases.family).
struct FamilyMember {
  std::string extname, from_version;
  std::vector<std::string> update_path;  // like UpgradeDatabase::update_path
};

// One database an upgrade covers (safe_upgrade.upgrade_databases).
struct UpgradeDatabase {
  std::string datname, from_version;
  std::vector<std::string> update_path;  // the hops, e.g. {"1.4", "1.5", ..., "1.8"}; may be empty
  std::vector<FamilyMember> family;      // in name order; usually empty
  std::vector<std::string> FamilyNames() const;
};

struct UpgradeRecord {
  int64_t id = 0;
  std::string extname, from_version, to_version, state;
  std::vector<UpgradeDatabase> databases;  // in name order; at least one
  nlohmann::json options = nlohmann::json::object();
  std::string LockTimeout() const;  // options.lock_timeout, default "2s"
  int MaxLockRetries() const;       // options.max_lock_retries, default 5
};

struct HealthCheckRecord {
  int64_t id = 0;
  std::string name, check_sql, timeout;  // timeout as interval text, e.g. "00:00:30"
  std::optional<std::string> extname;
  std::optional<std::string> datname;  // the database it runs in; nullopt: every database
  std::string created_by;              // the role that added it; the check runs as this role
};

struct RestorePointRecord {
  std::string name, lsn, wal_segment, backup_stop_lsn, xid;
  int timeline = 0;
};

// Throws JobFailure-worthy std::runtime_error when the upgrade does not exist.
UpgradeRecord LoadUpgrade(PgConn& conn, int64_t upgrade_id);
// User health checks for the upgrade's extension and the family upgraded with it in database db
// (their extname is one of those or NULL) that run there (their datname matches or is NULL).
std::vector<HealthCheckRecord> LoadHealthChecks(PgConn& conn, const UpgradeRecord& upgrade,
                                                const UpgradeDatabase& db);
std::optional<RestorePointRecord> LoadRestorePoint(PgConn& conn, int64_t upgrade_id);

// Ids of the upgrades whose state is one of states.
std::set<int64_t> UpgradeIdsInStates(PgConn& conn, const std::vector<std::string>& states);

// Connection to a production database: the control database named in the config (where the
// safe_upgrade catalog lives), or datname.
std::unique_ptr<PgConn> ConnectProduction(const AgentConfig& config, const std::string& application_name,
                                          const std::string& datname = "");

// Snapshot layout: <snapshot_dir>/<snapshot id>/{data/, snapshot.json}.
std::string SnapshotIdFor(int64_t upgrade_id);  // "snap-<id>"
std::string SnapshotDir(const AgentConfig& config, const std::string& snapshot_id);
std::string SnapshotDataDir(const AgentConfig& config, const std::string& snapshot_id);
std::string SnapshotMetaPath(const AgentConfig& config, const std::string& snapshot_id);
// Metadata written by the snapshot job; throws when the snapshot is missing or unverified.
nlohmann::json LoadSnapshotMeta(const AgentConfig& config, const std::string& snapshot_id);

}  // namespace safe_upgrade
