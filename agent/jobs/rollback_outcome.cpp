// The rollback's outcome, written into the catalog of the running server (the restored one, or
// the original after a failed recovery): PITR rewound the catalog too, so the upgrade's state,
// its events, its restore point and the data-loss window are written back from the journal.
#include <optional>

#include "core/state_table.h"
#include "jobs/jobs.h"
#include "jobs/rollback_run.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

using nlohmann::json;

// The primary is at the restore point: rolled back, unless a standby does not follow it.
void RollbackRun::WriteRolledBackOutcome() {
  std::string standbys_problem = StandbysProblem();
  WriteOutcome(std::string(StateName(standbys_problem.empty() ? UpgradeState::kRolledBack
                                                               : UpgradeState::kRollbackFailed)),
               standbys_problem, true);
}

// A rollback that cannot go on: its state and reason, when the server accepts them (best effort:
// the reason is in the job's error and the agent's events either way).
void RollbackRun::WriteFailedOutcome(const std::string& error) {
  try {
    auto conn = OutcomeConnection();
    std::string id = std::to_string(id_);
    conn->ExecScript("BEGIN");
    conn->Exec(
        "INSERT INTO safe_upgrade.events (upgrade_id, phase, level, message) VALUES ($1::bigint, "
        "'rollback_failed', "
        "'error', $2)",
        {id, "rollback failed: " + error});
    conn->Exec(
        "UPDATE safe_upgrade.upgrades SET state = 'rollback_failed', error = $2, updated_at = now(), "
        "agent_job = NULL "
        "WHERE id = $1::bigint",
        {id, error});
    conn->ExecScript("COMMIT");
  } catch (const std::exception& e) {
    ctx_.Event("rolling_back", "warning",
               std::string("could not write the outcome into the catalog: ") + e.what());
  }
}

// Each standby's re-sync into its row of upgrade_standbys (begin() recorded the ones that
// streamed then); a standby agent that begin() did not see streaming gets a row of its own.
void RollbackRun::WriteStandbyOutcomes(PgConn& conn) {
  for (const auto& standby : rc_.standbys)
    conn.Exec(
        "INSERT INTO safe_upgrade.upgrade_standbys AS s (upgrade_id, name, has_agent, outcome, error, detail, "
        "updated_at) VALUES ($1::bigint, $2, $3 <> 'no_agent', $3, nullif($4, ''), $5::jsonb, now()) "
        "ON CONFLICT (upgrade_id, name) DO UPDATE SET outcome = excluded.outcome, error = excluded.error, "
        "detail = excluded.detail, updated_at = now()",
        {std::to_string(id_), standby.value("name", ""), standby.value("outcome", ""), standby.value("error", ""),
         standby.dump()});
}

// The outcome's commit waits for no standby: with synchronous_standby_names set, a standby that a
// rollback could not bring back would hold it (and the record of why) forever.
std::unique_ptr<PgConn> RollbackRun::OutcomeConnection() const {
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  conn->Exec("SET synchronous_commit = local");
  return conn;
}

void RollbackRun::WriteOutcome(const std::string& state, const std::string& error, bool primary_restored) {
  auto conn = OutcomeConnection();
  conn->ExecScript("BEGIN");
  try {
    std::string id = std::to_string(id_);
    for (const auto& e : rc_.catalog_events)
      conn->Exec(
          "INSERT INTO safe_upgrade.events (id, upgrade_id, at, phase, level, message, detail) "
          "VALUES ($1::bigint, $2::bigint, $3::timestamptz, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO "
          "NOTHING",
          {e.id, id, e.at, e.phase, e.level, e.message, e.detail.dump()});
    conn->Exec(
        "SELECT setval('safe_upgrade.events_id_seq', greatest((SELECT max(id) FROM safe_upgrade.events), "
        "(SELECT last_value FROM safe_upgrade.events_id_seq)))");
    const JournaledRestorePoint& rp = rc_.restore_point;
    conn->Exec(
        "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, xid, backup_stop_lsn, "
        "wal_segment, created_at) VALUES ($1::bigint, $2, $3::pg_lsn, $4::int, nullif($5, '')::xid8, "
        "nullif($6, '')::pg_lsn, $7, coalesce(nullif($8, '')::timestamptz, now())) ON CONFLICT "
        "(upgrade_id) DO NOTHING",
        {id, rp.name, rp.lsn, std::to_string(rp.timeline), rp.xid, rp.backup_stop_lsn, rp.wal_segment,
         rc_.window ? rc_.window->restore_point_created_at : std::string()});
    for (const auto& e : rc_.events)
      conn->Exec(
          "INSERT INTO safe_upgrade.events (upgrade_id, at, phase, level, message, detail) "
          "VALUES ($1::bigint, $2::timestamptz, $3, $4, $5, $6::jsonb)",
          {id, e.at, e.phase, e.level, e.message, e.detail.dump()});
    json report = rc_.report;
    report["rollback"] = {{"state", state},
                          {"data_loss_window", rc_.window ? ToJson(*rc_.window) : json::object()},
                          {"timeline_after", rc_.timeline_after.value_or(0)},
                          {"failed_data_directory", AsideDir()},
                          {"failed_restore", rc_.failed_restore.value_or("")},
                          {"set_aside", ToJson(rc_.set_aside)},
                          {"path", PathName()},
                          {"downtime_s", rc_.downtime_s.value_or(-1.0)},
                          {"standbys", rc_.standbys}};
    if (!error.empty()) report["rollback"]["error"] = error;
    std::string message =
        state == StateName(UpgradeState::kRolledBack)
            ? "rolled back to restore point " + rp.name + "; " + rc_.extname + " is at " + rc_.from_version +
                  " again"
        : primary_restored ? "rollback failed: " + error
                           : "rollback failed: " + error + "; the original data directory is running again";
    conn->Exec(
        "INSERT INTO safe_upgrade.events (upgrade_id, phase, level, message, detail) "
        "VALUES ($1::bigint, $2, $3, $4, $5::jsonb)",
        {id, state, state == StateName(UpgradeState::kRolledBack) ? "info" : "error", message,
         report["rollback"].dump()});
    conn->Exec(
        "UPDATE safe_upgrade.upgrades SET state = $2, report = $3::jsonb, updated_at = now(), agent_job = "
        "NULL, "
        "error = CASE WHEN $4 = '' THEN error ELSE $4 END WHERE id = $1::bigint",
        {id, state, report.dump(), error});
    // Each database's results as they were before the recovery rewound them; rolled back, every
    // one of them is where the restore point left it.
    if (primary_restored) WriteStandbyOutcomes(*conn);
    for (const auto& db : rc_.catalog_databases)
      conn->Exec(
          "UPDATE safe_upgrade.upgrade_databases SET report = $3::jsonb, error = $5, "
          "outcome = CASE WHEN $6 = 'rolled_back' THEN 'rolled_back' ELSE $4 END "
          "WHERE upgrade_id = $1::bigint AND datname = $2",
          {id, db.datname, db.report.dump(), db.outcome, db.error, state});
    conn->ExecScript("COMMIT");
  } catch (...) {
    try {
      conn->ExecScript("ROLLBACK");
    } catch (...) {
    }
    throw;
  }
}

}  // namespace safe_upgrade
