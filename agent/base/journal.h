// The agent's journal: one JSON document per upgrade, rewritten atomically (fsync + rename) at
// every step, so that a restarted agent knows what was done and resumes or resolves it.
//
// The document is typed (JournalDoc below) and converted to and from JSON in one place
// (journal_json.cpp). It carries "format": 1; a document without it (written before the field
// existed) is format 1, and one with any other format, an unknown enum string or a field of the
// wrong type is refused whole (JournalError naming the file), never half-read. The key names on
// disk are the ones of the untyped journal before it, so that either agent reads the other's files.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace safe_upgrade {

// The format this agent writes and the only one it reads.
constexpr int kJournalFormat = 1;

// A journal document that cannot be read as this agent's format; the file is left as it is.
class JournalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How far the one application to production got ("apply").
enum class ApplyState { kNone, kStarted, kCommitted, kPartiallyCommitted, kNotCommitted };
// Per database ("apply_databases").
enum class DatabaseApplyState { kStarted, kCommitted, kNotCommitted };
// "rollback"
enum class RollbackState { kNone, kInProgress, kRolledBack, kRollbackFailed };
// The parked rollback target's life ("rollback_target.state").
enum class TargetState { kCopying, kFollowing, kParked, kSwapped };

// The journal's words for them (the on-disk strings, also those of the GetUpgradeJournal RPC).
std::string ToString(ApplyState state);
std::string ToString(DatabaseApplyState state);
std::string ToString(RollbackState state);
std::string ToString(TargetState state);
// Throw JournalError on a string that is none of them.
ApplyState ParseApplyState(const std::string& text);
RollbackState ParseRollbackState(const std::string& text);

// A dry-run clone ("clones"), journaled before its directory exists.
struct JournaledClone {
  std::string path, data_dir, socket_dir;
  int port = 0;
  std::string job, snapshot_id, created_at;
};

// The parked rollback target ("rollback_target"), journaled before its directory exists.
struct RollbackTargetRecord {
  struct Synced {
    uint64_t files = 0, directories = 0;
    double seconds = 0;
  };
  std::string dir, run_dir, socket_dir, log;
  int port = 0;
  std::string restore_point, snapshot_id;
  nlohmann::json layout = nlohmann::json::object();  // ExternalLayout::ToJson (postgres layer)
  TargetState state = TargetState::kCopying;
  std::string created_at;
  std::optional<Synced> synced;          // absent when an earlier agent prepared it
  std::optional<nlohmann::json> parked;  // its control file's facts once parked
};

// The restore point as the catalog recorded it when the rollback began.
struct JournaledRestorePoint {
  std::string name, lsn;
  int timeline = 0;
  std::string xid, wal_segment, backup_stop_lsn;
};

// An event of the rollback, written into the restored catalog at the end.
struct RollbackEvent {
  std::string at, phase, level, message;
  nlohmann::json detail = nlohmann::json::object();
};

// An event of the upgrade saved from the catalog before PITR rewinds it.
struct CatalogEvent {
  std::string id, at, phase, level, message;
  nlohmann::json detail = nlohmann::json::object();
};

// A database's row of safe_upgrade.upgrade_databases, saved before PITR rewinds it.
struct CatalogDatabase {
  std::string datname, outcome;
  nlohmann::json report = nlohmann::json::object();
  std::optional<std::string> error;
};

struct DatabaseVersion {
  std::string datname, from_version;
};

// What a rollback discards, recorded right before production stops.
struct DataLossWindow {
  std::string restore_point, restore_point_lsn, restore_point_xid, restore_point_created_at;
  std::string rollback_started_lsn, rollback_started_xid, rollback_started_at;
  int64_t wal_bytes_discarded = 0, transaction_ids_discarded = 0;
  std::string loses;
};

struct SetAsidePath {
  std::string from, to;
};

// What a rollback decided and learnt, journaled with every step so that a resumed one goes on
// with the same facts ("rollback_context").
struct RollbackContext {
  bool fast = false;  // through the parked target
  uint64_t snapshot_bytes = 0;
  std::optional<RollbackTargetRecord> rollback_target;  // when fast
  std::string extname, from_version, to_version;
  std::vector<DatabaseVersion> databases;
  std::string snapshot_id, snapshot_data, system_identifier;
  JournaledRestorePoint restore_point;
  std::vector<RollbackEvent> events;
  // <id>-<UTC time of the precheck>; absent in the journals of agents that used the id alone.
  std::optional<std::string> dir_suffix;
  nlohmann::json outside = nlohmann::json::object();  // OutsidePlan::ToJson (postgres layer)
  std::vector<SetAsidePath> set_aside;
  // Saved by the window step.
  std::vector<CatalogEvent> catalog_events;
  nlohmann::json report = nlohmann::json::object();
  std::vector<CatalogDatabase> catalog_databases;
  std::optional<int> timeline_before;
  std::optional<DataLossWindow> window;
  // Seconds since the epoch when the stop began, and the downtime once promoted.
  std::optional<double> downtime_started, downtime_s;
  std::optional<int> timeline_after;
  std::optional<std::string> failed_restore;
  // The physical replication slots production had at the precheck: a restored copy lacks them
  // (backups leave pg_replslot out), and the standbys that stream through them need them back.
  std::vector<std::string> physical_slots;
  // Once the primary is restored: per standby agent, how its re-sync went (jobs/standbys.h).
  nlohmann::json standbys = nlohmann::json::array();
};

// One upgrade's document.
struct JournalDoc {
  int64_t upgrade_id = 0;
  // apply
  ApplyState apply = ApplyState::kNone;
  std::map<ApplyState, std::string> apply_at;  // "apply_<state>_at"
  std::string apply_job;
  std::map<std::string, DatabaseApplyState> apply_databases;
  std::optional<int> apply_backend_pid;
  std::optional<std::string> apply_error;
  // snapshot and scratch
  std::string snapshot_id;
  std::vector<JournaledClone> clones;
  std::optional<RollbackTargetRecord> rollback_target;
  // rollback
  RollbackState rollback = RollbackState::kNone;
  std::string rollback_step;  // the last one done; names are the rollback's step table's
  std::optional<RollbackContext> rollback_context;
  std::optional<std::string> rollback_putting_back;  // why, while the original is put back
  // The agent paused Patroni for this upgrade (at its scheduled step) and resumes it once the
  // upgrade has ended; false when Patroni was paused already (by someone else, who resumes it).
  bool patroni_paused = false;
};

// The one conversion between the document and its JSON. FromJson throws JournalError.
nlohmann::json ToJson(const JournalDoc& doc);
JournalDoc JournalDocFromJson(const nlohmann::json& j);
nlohmann::json ToJson(const RollbackTargetRecord& target);
nlohmann::json ToJson(const DataLossWindow& window);
nlohmann::json ToJson(const std::vector<SetAsidePath>& paths);
std::vector<SetAsidePath> SetAsidePathsFromJson(const nlohmann::json& j);

class Journal {
 public:
  explicit Journal(std::string dir);
  // The upgrade's document (a default one when none is journaled). Throws JournalError.
  JournalDoc Load(int64_t upgrade_id) const;
  // The document, or nullopt when the upgrade has none.
  std::optional<JournalDoc> Find(int64_t upgrade_id) const;
  // Read-modify-write under a lock, durable on return. A document that cannot be read is not
  // written (JournalError).
  JournalDoc Update(int64_t upgrade_id, const std::function<void(JournalDoc&)>& change);
  std::vector<int64_t> UpgradeIds() const;
  const std::string& dir() const { return dir_; }
  std::string PathFor(int64_t upgrade_id) const;

 private:
  std::optional<JournalDoc> Read(const std::string& path) const;
  std::string dir_;
  mutable std::mutex mu_;
};

}  // namespace safe_upgrade
