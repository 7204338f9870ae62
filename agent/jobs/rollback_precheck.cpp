// The rollback's steps while production still runs, untouched: the prechecks (restore point,
// snapshot, cluster, layout, disk, free names), the parked target's check and the data-loss
// window. A failure in any of them refuses the rollback with nothing to undo.
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "base/fs_util.h"
#include "jobs/jobs.h"
#include "jobs/rollback_run.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"
#include "postgres/pgbackrest.h"
#include "scratch/rollback_target.h"
#include "storage/reflink.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

// How long a rollback waits for the parked target to reach the restore point before it falls
// back to restoring the snapshot.
constexpr std::chrono::seconds kParkWait{120};

}  // namespace

// Nothing has been touched yet: refuse cleanly when the rollback cannot work.
void RollbackRun::Precheck() {
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  UpgradeRecord u = LoadUpgrade(*conn, id_);
  auto rp = LoadRestorePoint(*conn, id_);
  json fail_detail = {{"stage", "precheck"}};
  if (!rp)
    throw JobFailure("upgrade " + std::to_string(id_) + " has no restore point; it never reached apply",
                     fail_detail);
  std::string snapshot_id = SnapshotIdFor(id_);
  json meta;
  try {
    meta = LoadSnapshotMeta(config_, snapshot_id);
  } catch (const std::exception& e) {
    throw JobFailure(std::string("cannot roll back: ") + e.what(), fail_detail);
  }
  std::string sysid = conn->Exec("SELECT system_identifier::text FROM pg_control_system()").Scalar();
  if (meta.value("system_identifier", "") != sysid)
    throw JobFailure("snapshot " + snapshot_id + " belongs to another cluster (system identifier " +
                         meta.value("system_identifier", "?") + ", this cluster " + sysid + ")",
                     fail_detail);
  // Production's tablespaces and linked pg_wal are set aside and restored with the data directory.
  OutsidePlan outside;
  outside.snapshot = ExternalLayout::FromJson(meta.value("layout", json::object()));
  outside.production = ReadExternalLayout(config_.data_directory, outside.snapshot.version_dir);
  outside.snapshot_dir = SnapshotDir(config_, snapshot_id);
  std::string refusal = LayoutRefusal(outside.production, config_.data_directory);
  if (refusal.empty() && outside.snapshot.version_dir.empty() && !outside.production.tablespaces.empty())
    refusal = "snapshot " + snapshot_id + " recorded no tablespaces, but production has some";
  if (!refusal.empty()) throw JobFailure("cannot roll back: " + refusal, fail_detail);
  const std::optional<RollbackTargetRecord> target = ctx_.journal().Load(id_).rollback_target;
  bool fast = target && (target->state == TargetState::kFollowing || target->state == TargetState::kParked);
  rc_ = RollbackContext{};
  rc_.fast = fast;
  rc_.snapshot_bytes = meta.value("size_bytes", uint64_t{0});
  if (fast) rc_.rollback_target = target;
  rc_.extname = u.extname;
  rc_.from_version = u.from_version;
  for (const auto& db : u.databases) rc_.databases.push_back({db.datname, db.from_version});
  rc_.to_version = u.to_version;
  rc_.snapshot_id = snapshot_id;
  rc_.snapshot_data = SnapshotDataDir(config_, snapshot_id);
  rc_.system_identifier = sysid;
  rc_.restore_point = {rp->name, rp->lsn, rp->timeline, rp->xid, rp->wal_segment, rp->backup_stop_lsn};
  // Chosen once and journaled, so that a resumed rollback finds its directories again.
  rc_.dir_suffix = std::to_string(id_) + "-" + CompactUtcStamp();
  outside.suffix = *rc_.dir_suffix;
  rc_.outside = outside.ToJson();
  // Every path the rollback moves aside, journaled before the first move.
  rc_.set_aside = {{config_.data_directory, AsideDir()}};
  for (const auto& moved : SetAsidePathsFromJson(outside.SetAside())) rc_.set_aside.push_back(moved);
  for (const auto& row : conn->Exec("SELECT slot_name FROM pg_catalog.pg_replication_slots "
                                    "WHERE slot_type = 'physical' AND NOT temporary ORDER BY slot_name")
                             .rows)
    rc_.physical_slots.push_back(row[0].value_or(""));
  if (!fast) RequireDiskForRestore();
  RequireRoomToSetAside();
  if (IsPgBackRestSnapshot(meta)) {
    if (!fast) RequireBackupInStanza(meta, fail_detail);
  } else if (!IsDirectory(rc_.snapshot_data))
    throw JobFailure(
        "cannot roll back: the data of snapshot " + snapshot_id + " (" + rc_.snapshot_data + ") is missing",
        fail_detail);
}

// A cold rollback from a pgBackRest snapshot restores it from the stanza's repository: found
// unreachable after the stop, production would stay down until it came back.
void RollbackRun::RequireBackupInStanza(const json& meta, const json& fail_detail) {
  std::string label = meta["pgbackrest"].value("label", "");
  try {
    PgBackRestStanza stanza = PgBackRest(config_).Info();
    // pgBackRest's info reports an unreadable repository as a status, with no backups listed.
    if (!stanza.Readable()) {
      std::string why = stanza.status;
      for (const auto& repo : stanza.repos)
        why += "; repo" + std::to_string(repo.value("key", 0)) + ": " + repo.value("status", "");
      throw PgBackRestError("pgbackrest info: " + why);
    }
    if (!stanza.Find(label))
      throw JobFailure("cannot roll back: pgBackRest backup " + label + " of snapshot " + rc_.snapshot_id +
                           " is no longer in stanza \"" + config_.backend.stanza +
                           "\" (expired?); production was not stopped",
                       fail_detail);
    Event("info", "pgBackRest backup " + label + " is in stanza \"" + config_.backend.stanza +
                      "\"; the rollback restores it from the repository");
  } catch (const PgBackRestError& e) {
    throw JobFailure(std::string("cannot roll back: the stanza's repository cannot be read (") + e.what() +
                         "); production was not stopped",
                     fail_detail);
  }
}

// The names the rollback will create are free and their directory writable: found out after
// the stop, either would leave production down.
void RollbackRun::RequireRoomToSetAside() {
  std::string parent = Dirname(config_.data_directory);
  if (access(parent.c_str(), W_OK | X_OK) != 0)
    throw JobFailure(
        "cannot roll back: " + parent + " (holding the data directory) is not writable by the agent",
        {{"stage", "precheck"}});
  std::vector<std::string> names = Outside().NamesToCreate();
  for (const std::string& dir : {AsideDir(), RestoringDir(), FailedRestoreDir()}) names.push_back(dir);
  for (const std::string& dir : names)
    if (PathExists(dir))
      throw JobFailure(
          "cannot roll back: " + dir + " already exists; move it away, it is not this rollback's",
          {{"stage", "precheck"}});
}

// The restored copy lands next to the data directory, and each tablespace next to production's.
void RollbackRun::RequireDiskForRestore() {
  OutsidePlan outside = Outside();
  uint64_t data_bytes = rc_.snapshot_bytes;
  for (const auto& ts : outside.snapshot.tablespaces) data_bytes -= std::min(data_bytes, ts.size_bytes);
  std::vector<Placement> placements = outside.RestorePlacements(data_bytes, Dirname(config_.data_directory));
  DiscountSharedExtents(rc_.snapshot_data, placements);
  std::string short_of = RoomRefusal(placements, config_.disk_reserve_mb * 1024 * 1024);
  if (!short_of.empty())
    throw JobFailure("not enough disk to restore the snapshot: " + short_of, {{"stage", "precheck"}});
}

// Nothing is stopped yet. The parked target is used only if it stopped exactly at the restore
// point; otherwise it is discarded and the snapshot is restored (the cold path).
void RollbackRun::CheckRollbackTarget() {
  if (!Fast()) {
    Event("info",
          "no parked rollback target: the snapshot will be restored and WAL replayed (the cold path)");
    return;
  }
  RestorePointAt at{rc_.restore_point.name, rc_.restore_point.lsn, rc_.restore_point.timeline};
  const std::string& rp = at.name;
  const RollbackTargetRecord target = rc_.rollback_target.value_or(RollbackTargetRecord{});
  ParkedState parked = ParkRollbackTarget(config_, target, at, kParkWait);
  json detail = parked.facts;
  detail["dir"] = target.dir;
  if (parked.parked) {
    Event("info",
          "the rollback target prepared before the apply is parked at restore point " + rp +
              " (promoted there on timeline " + std::to_string(parked.facts.value("timeline", 0)) +
              " and shut down cleanly); rolling back by swapping it in (no copy, nothing to replay)",
          detail);
    return;
  }
  Event("warning",
        "the rollback target cannot be used: " + parked.reason + "; falling back to restoring the snapshot",
        detail);
  DiscardRollbackTarget(config_, ctx_.journal(), id_, "it was not parked at the restore point");
  rc_.fast = false;
  RequireDiskForRestore();
  // The cold path reads the stanza: checked now, while production still runs.
  json meta = LoadSnapshotMeta(config_, rc_.snapshot_id);
  if (IsPgBackRestSnapshot(meta)) RequireBackupInStanza(meta, {{"stage", "precheck"}});
}

// Saves what the recovery is about to rewind (the upgrade's events and report), then notes
// where production is: last, right before the stop, so the window covers every lost write.
void RollbackRun::RecordWindow() {
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  // The events written since the restore point vanish with PITR; keep them to write them back.
  auto events = conn->Exec(
      "SELECT id::text, at::text, phase, level, message, detail::text FROM safe_upgrade.events "
      "WHERE upgrade_id = $1::bigint ORDER BY id",
      {std::to_string(id_)});
  rc_.catalog_events.clear();
  for (const auto& e : events.rows)
    rc_.catalog_events.push_back({*e[0], *e[1], *e[2], *e[3], *e[4], json::parse(e[5].value_or("{}"))});
  auto report = conn->Exec("SELECT report::text FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                           {std::to_string(id_)});
  rc_.report = json::parse(report.rows.at(0)[0].value_or("{}"));
  auto per_database = conn->Exec(
      "SELECT datname::text, outcome, report::text, error FROM safe_upgrade.upgrade_databases "
      "WHERE upgrade_id = $1::bigint ORDER BY datname",
      {std::to_string(id_)});
  rc_.catalog_databases.clear();
  for (const auto& row : per_database.rows)
    rc_.catalog_databases.push_back(
        {row[0].value_or(""), row[1].value_or(""), json::parse(row[2].value_or("{}")), row[3]});
  auto r = conn->Exec(
      "SELECT pg_current_wal_lsn()::text, pg_snapshot_xmax(pg_current_snapshot())::text, "
      "pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text, "
      "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text, now()::text, "
      "(SELECT created_at::text FROM safe_upgrade.restore_points WHERE upgrade_id = $2::bigint)",
      {rc_.restore_point.lsn, std::to_string(id_)});
  const auto& row = r.rows.at(0);
  const std::string& rp_xid = rc_.restore_point.xid;
  long long xids = rp_xid.empty() ? -1 : std::stoll(*row[1]) - std::stoll(rp_xid);
  rc_.timeline_before = std::stoi(*row[3]);
  DataLossWindow window;
  window.restore_point = rc_.restore_point.name;
  window.restore_point_lsn = rc_.restore_point.lsn;
  window.restore_point_xid = rp_xid;
  window.restore_point_created_at = row[5].value_or("");
  window.rollback_started_lsn = *row[0];
  window.rollback_started_xid = *row[1];
  window.rollback_started_at = *row[4];
  window.wal_bytes_discarded = std::stoll(*row[2]);
  window.transaction_ids_discarded = xids;
  window.loses = "every write committed after the restore point, including the upgrade itself";
  rc_.window = window;
  Event("info",
        "data-loss window recorded: " + std::to_string(window.wal_bytes_discarded) +
            " bytes of WAL and about " + std::to_string(xids) + " transaction ids after restore point " +
            rc_.restore_point.name + " will be discarded",
        ToJson(window));
}

}  // namespace safe_upgrade
