// The journal document's one conversion to and from JSON. Reading is strict: an unknown enum
// string or a field of the wrong type is a JournalError naming the top-level field it is in, and an absent
// field keeps its default (documents of earlier agents lack the fields added since).
#include <optional>
#include <string>

#include "base/journal.h"

// std::optional as null or the value (nlohmann 3.11 has no serializer of its own for it).
namespace nlohmann {
template <typename T>
struct adl_serializer<std::optional<T>> {
  static void to_json(json& j, const std::optional<T>& value) {
    if (value)
      j = *value;
    else
      j = nullptr;
  }
  static void from_json(const json& j, std::optional<T>& value) {
    if (j.is_null())
      value.reset();
    else
      value = j.get<T>();
  }
};
}  // namespace nlohmann

namespace safe_upgrade {
namespace {

using nlohmann::json;

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

constexpr EnumName<ApplyState> kApplyStates[] = {{ApplyState::kNone, "none"},
                                                 {ApplyState::kStarted, "started"},
                                                 {ApplyState::kCommitted, "committed"},
                                                 {ApplyState::kPartiallyCommitted, "partially_committed"},
                                                 {ApplyState::kNotCommitted, "not_committed"}};
constexpr EnumName<DatabaseApplyState> kDatabaseApplyStates[] = {
    {DatabaseApplyState::kStarted, "started"},
    {DatabaseApplyState::kCommitted, "committed"},
    {DatabaseApplyState::kNotCommitted, "not_committed"}};
constexpr EnumName<RollbackState> kRollbackStates[] = {{RollbackState::kNone, "none"},
                                                       {RollbackState::kInProgress, "in_progress"},
                                                       {RollbackState::kRolledBack, "rolled_back"},
                                                       {RollbackState::kRollbackFailed, "rollback_failed"}};
constexpr EnumName<TargetState> kTargetStates[] = {{TargetState::kCopying, "copying"},
                                                   {TargetState::kFollowing, "following"},
                                                   {TargetState::kParked, "parked"},
                                                   {TargetState::kSwapped, "swapped"}};

template <typename E, size_t N>
std::string NameIn(const EnumName<E> (&table)[N], E value) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  throw JournalError("an enum value without a name");
}

template <typename E, size_t N>
E ValueIn(const EnumName<E> (&table)[N], const std::string& text, const char* what) {
  std::string known;
  for (const auto& entry : table) {
    if (text == entry.name) return entry.value;
    known += std::string(known.empty() ? "" : ", ") + entry.name;
  }
  throw JournalError(std::string(what) + " \"" + text + "\" is not one of " + known);
}

template <typename E, size_t N>
void EnumFromJson(const json& j, E& out, const EnumName<E> (&table)[N], const char* what) {
  out = ValueIn(table, j.get<std::string>(), what);
}

// The field key of object j into out; absent (or null) keeps out as it is. Errors name the key.
template <typename T>
void Get(const json& j, const std::string& key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const JournalError& e) {
    throw JournalError("\"" + key + "\": " + e.what());
  } catch (const json::exception& e) {
    throw JournalError("\"" + key + "\": " + e.what());
  }
}

template <typename T>
void PutIf(json& j, const char* key, const std::optional<T>& value) {
  if (value) j[key] = *value;
}

}  // namespace

// Unknown strings are errors, never the first value (as NLOHMANN_JSON_SERIALIZE_ENUM would read them).
void to_json(json& j, ApplyState v) { j = ToString(v); }
void from_json(const json& j, ApplyState& v) { EnumFromJson(j, v, kApplyStates, "apply state"); }
void to_json(json& j, DatabaseApplyState v) { j = ToString(v); }
void from_json(const json& j, DatabaseApplyState& v) {
  EnumFromJson(j, v, kDatabaseApplyStates, "database apply state");
}
void to_json(json& j, RollbackState v) { j = ToString(v); }
void from_json(const json& j, RollbackState& v) { EnumFromJson(j, v, kRollbackStates, "rollback state"); }
void to_json(json& j, TargetState v) { j = ToString(v); }
void from_json(const json& j, TargetState& v) { EnumFromJson(j, v, kTargetStates, "rollback target state"); }

// The records inside the document: each field's key is its name; an absent one keeps its default,
// an absent optional is written as null.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(JournaledClone, path, data_dir, socket_dir, port, job,
                                                snapshot_id, created_at)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RollbackTargetRecord::Synced, files, directories, seconds)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RollbackTargetRecord, dir, run_dir, socket_dir, log, port,
                                                restore_point, snapshot_id, layout, state, created_at, synced,
                                                parked)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(JournaledRestorePoint, name, lsn, timeline, xid, wal_segment,
                                                backup_stop_lsn)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RollbackEvent, at, phase, level, message, detail)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CatalogEvent, id, at, phase, level, message, detail)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CatalogDatabase, datname, outcome, report, error)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DatabaseVersion, datname, from_version)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DataLossWindow, restore_point, restore_point_lsn,
                                                restore_point_xid, restore_point_created_at,
                                                rollback_started_lsn, rollback_started_xid,
                                                rollback_started_at, wal_bytes_discarded,
                                                transaction_ids_discarded, loses)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SetAsidePath, from, to)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RollbackContext, fast, snapshot_bytes, rollback_target,
                                                extname, from_version, to_version, databases, snapshot_id,
                                                snapshot_data, system_identifier, restore_point, events,
                                                dir_suffix, outside, set_aside, catalog_events, report,
                                                catalog_databases, timeline_before, window, downtime_started,
                                                downtime_s, timeline_after, failed_restore,
                                                physical_slots, standbys)

std::string ToString(ApplyState state) { return NameIn(kApplyStates, state); }
std::string ToString(DatabaseApplyState state) { return NameIn(kDatabaseApplyStates, state); }
std::string ToString(RollbackState state) { return NameIn(kRollbackStates, state); }
std::string ToString(TargetState state) { return NameIn(kTargetStates, state); }
ApplyState ParseApplyState(const std::string& text) { return ValueIn(kApplyStates, text, "apply state"); }
RollbackState ParseRollbackState(const std::string& text) {
  return ValueIn(kRollbackStates, text, "rollback state");
}

json ToJson(const RollbackTargetRecord& target) { return target; }
json ToJson(const DataLossWindow& window) { return window; }
json ToJson(const std::vector<SetAsidePath>& paths) { return paths; }

std::vector<SetAsidePath> SetAsidePathsFromJson(const json& j) {
  try {
    return j.get<std::vector<SetAsidePath>>();
  } catch (const json::exception& e) {
    throw JournalError(e.what());
  }
}

json ToJson(const JournalDoc& doc) {
  json j = {{"format", kJournalFormat}, {"upgrade_id", doc.upgrade_id}};
  if (doc.apply != ApplyState::kNone) j["apply"] = ToString(doc.apply);
  for (const auto& [state, at] : doc.apply_at) j["apply_" + ToString(state) + "_at"] = at;
  if (!doc.apply_job.empty()) j["apply_job"] = doc.apply_job;
  if (doc.apply != ApplyState::kNone || !doc.apply_databases.empty())
    j["apply_databases"] = doc.apply_databases;
  PutIf(j, "apply_backend_pid", doc.apply_backend_pid);
  PutIf(j, "apply_error", doc.apply_error);
  if (!doc.snapshot_id.empty()) j["snapshot_id"] = doc.snapshot_id;
  if (!doc.clones.empty()) j["clones"] = doc.clones;
  PutIf(j, "rollback_target", doc.rollback_target);
  if (doc.rollback != RollbackState::kNone) j["rollback"] = ToString(doc.rollback);
  if (!doc.rollback_step.empty()) j["rollback_step"] = doc.rollback_step;
  PutIf(j, "rollback_context", doc.rollback_context);
  PutIf(j, "rollback_putting_back", doc.rollback_putting_back);
  if (doc.patroni_paused) j["patroni_paused"] = true;
  return j;
}

JournalDoc JournalDocFromJson(const json& j) {
  if (!j.is_object()) throw JournalError("the document is not a JSON object");
  // Written before the field existed: format 1.
  int format = 1;
  if (j.contains("format")) {
    if (!j["format"].is_number_integer())
      throw JournalError("\"format\" is not an integer: " + j["format"].dump());
    format = j["format"].get<int>();
  }
  if (format != kJournalFormat)
    throw JournalError("it has format " + std::to_string(format) + " and this agent reads format " +
                       std::to_string(kJournalFormat) +
                       " only; it was left as it is (run the agent that wrote it, or move the file away)");
  JournalDoc doc;
  Get(j, "upgrade_id", doc.upgrade_id);
  Get(j, "apply", doc.apply);
  for (const auto& entry : kApplyStates) {
    std::string at;
    Get(j, std::string("apply_") + entry.name + "_at", at);
    if (!at.empty()) doc.apply_at[entry.value] = at;
  }
  Get(j, "apply_job", doc.apply_job);
  Get(j, "apply_databases", doc.apply_databases);
  Get(j, "apply_backend_pid", doc.apply_backend_pid);
  Get(j, "apply_error", doc.apply_error);
  Get(j, "snapshot_id", doc.snapshot_id);
  Get(j, "clones", doc.clones);
  Get(j, "rollback_target", doc.rollback_target);
  Get(j, "rollback", doc.rollback);
  Get(j, "rollback_step", doc.rollback_step);
  Get(j, "rollback_context", doc.rollback_context);
  Get(j, "rollback_putting_back", doc.rollback_putting_back);
  Get(j, "patroni_paused", doc.patroni_paused);
  return doc;
}

}  // namespace safe_upgrade
