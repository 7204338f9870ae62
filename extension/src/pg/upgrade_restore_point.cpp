// The scheduled state, step by step: only one upgrade at a time between its restore point and its
// end, a snapshot still on production's timeline, the rollback target (an agent job), the restore
// point after the snapshot's backup, and its WAL segment archived before anything touches
// production.
#include "upgrade_restore_point.h"

#include "core/restore_point.h"
#include "gucs.h"
#include "spi.h"
#include "upgrade_jobs.h"

namespace safe_upgrade::pg {
namespace {

using nlohmann::json;
using S = UpgradeState;

// Creates the restore point after the snapshot's backup, records it, switches WAL. A restore point
// that is not after the backup can never be reached from it: the upgrade fails (production is
// untouched) instead of trying again at every pass.
void CreateRestorePoint(Upgrade& u) {
  std::string stop_lsn = u.snapshot.value("backup_stop_lsn", "");
  if (stop_lsn.empty())
    throw std::runtime_error("the snapshot has no backup_stop_lsn; cannot place a restore point");
  auto name = SpiExec("SELECT safe_upgrade.restore_point_name($1::bigint)", {std::to_string(u.id)}).Value();
  auto r = SpiExec(
      "SELECT rp::text, (rp > $1::pg_lsn)::text, pg_walfile_name(rp), "
      "('x' || substr(pg_walfile_name(rp), 1, 8))::bit(32)::int::text, "
      "pg_snapshot_xmax(pg_current_snapshot())::text "
      "FROM pg_create_restore_point($2) AS rp",
      {stop_lsn, *name});
  const auto& row = r.rows.at(0);
  if (row[1] != std::optional<std::string>("true"))
    return Transition(
        u, S::kFailed,
        "restore point LSN " + *row[0] + " is not after the snapshot's backup stop LSN " + stop_lsn +
            ", so a rollback could never reach it; production was not touched. Begin the upgrade "
            "again for a new snapshot.");
  SpiExec(
      "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, xid, backup_stop_lsn, "
      "wal_segment) "
      "VALUES ($1::bigint, $2, $3::pg_lsn, $4::int, $5::xid8, $6::pg_lsn, $7)",
      {std::to_string(u.id), *name, *row[0], *row[3], *row[4], stop_lsn, *row[2]});
  SpiExec("SELECT pg_switch_wal()");
  AddEvent(u.id, {"restore_point",
                  "info",
                  "restore point " + *name + " created at LSN " + *row[0] + " (after backup stop LSN " +
                      stop_lsn + "); waiting for WAL segment " + *row[2] + " to be archived",
                  {{"name", *name},
                   {"lsn", *row[0]},
                   {"timeline", std::stoi(*row[3])},
                   {"wal_segment", *row[2]},
                   {"backup_stop_lsn", stop_lsn},
                   {"xid", *row[4]}}});
}

bool RestorePointArchived(const Upgrade& u, std::string& segment, std::string& archiver_state) {
  auto r = SpiExec(
      "SELECT rp.wal_segment, "
      "(pg_stat_file('pg_wal/archive_status/' || rp.wal_segment || '.done', true)).size IS NOT NULL, "
      "a.last_archived_wal, a.last_failed_wal, a.last_failed_time::text "
      "FROM safe_upgrade.restore_points rp, pg_stat_archiver a WHERE rp.upgrade_id = $1::bigint",
      {std::to_string(u.id)});
  if (r.rows.empty()) return false;
  const auto& row = r.rows[0];
  segment = row[0].value_or("");
  archiver_state = "last archived " + row[2].value_or("none") + ", last failed " + row[3].value_or("none");
  if (row[1] == std::optional<std::string>("true") || row[1] == std::optional<std::string>("t")) return true;
  return row[2] && SegmentArchived(*row[2], segment);
}

// Whether the snapshot can still serve a rollback: it must come from the timeline production runs
// on. After another upgrade's point-in-time recovery forked a new timeline, replaying from an older
// snapshot would resurrect the history that recovery discarded.
std::optional<std::string> SnapshotOffTimeline(const Upgrade& u) {
  auto r = SpiExec("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text");
  int64_t now_tli = std::stoll(r.Value().value_or("0"));
  int64_t snap_tli = u.snapshot.value("timeline", int64_t{0});
  if (snap_tli == 0 || snap_tli == now_tli) return std::nullopt;
  return "production moved from timeline " + std::to_string(snap_tli) + " to timeline " +
         std::to_string(now_tli) +
         " (a point-in-time recovery) after this upgrade's snapshot was taken, so the snapshot can no longer "
         "roll production back; production was not touched. Begin the upgrade again for a new snapshot.";
}

// Another upgrade that is between its restore point and its end. A point-in-time recovery rewinds
// the whole cluster, so while one upgrade may still roll back, no other may create a restore point
// (and apply): its rollback could undo the other's apply, or the other's could undo it.
std::optional<int64_t> UpgradePastItsRestorePoint(const Upgrade& u) {
  auto r = SpiExec(
      "SELECT u.id::text FROM safe_upgrade.upgrades u "
      "JOIN safe_upgrade.restore_points rp ON rp.upgrade_id = u.id "
      "WHERE u.id <> $1::bigint AND u.state = ANY (safe_upgrade._in_flight_states()) ORDER BY u.id LIMIT 1",
      {std::to_string(u.id)});
  if (r.rows.empty()) return std::nullopt;
  return std::stoll(*r.Value());
}

// Waits in scheduled, saying once (per blocker) why.
void WaitForOtherUpgrade(const Upgrade& u, int64_t other) {
  if (u.report.value("waiting_for_upgrade", int64_t{0}) == other) return;
  MergeReport(u, "waiting_for_upgrade", other);
  AddEvent(u.id,
           {std::string(StateName(u.state)),
            "info",
            "waiting for upgrade " + std::to_string(other) +
                " to end: it is between its restore point and its end, and a rollback rewinds the whole "
                "cluster, so only one upgrade at a time may be there",
            {{"waiting_for_upgrade", other}}});
}

}  // namespace

void StepScheduled(Upgrade& u, AgentClient& agent, const AgentJournal& journal) {
  if (!u.not_before_reached) return;
  if (!u.has_restore_point) {
    if (auto reason = SnapshotOffTimeline(u)) return Transition(u, S::kFailed, *reason);
    if (auto other = UpgradePastItsRestorePoint(u)) return WaitForOtherUpgrade(u, *other);
    // The rollback target is copied before the restore point exists (it waits for it in the
    // archive), so its copy never widens the window of writes a rollback discards.
    if (!u.report.contains(std::string(TableRow(u.state).result_key)))
      return u.agent_job ? FollowJob(u, agent, journal) : StartJob(u, agent, journal);
    return CreateRestorePoint(u);
  }
  std::string segment, archiver;
  if (RestorePointArchived(u, segment, archiver)) {
    AddEvent(u.id,
             {"restore_point", "info", "WAL segment " + segment + " with the restore point is archived"});
    Transition(u, TableRow(u.state).on_success);
  } else if (u.seconds_in_state > guc_archive_wait_timeout_s) {
    Transition(u, S::kFailed,
               "the WAL segment " + segment + " holding the restore point was not archived within " +
                   std::to_string(guc_archive_wait_timeout_s) + " s (" + archiver +
                   "); production was not touched. Check archive_command and the archive directory.");
  }
}

}  // namespace safe_upgrade::pg
