// The scheduler's state machine. Each step reads the upgrade row FOR UPDATE, talks to the agent
// (short RPCs with deadlines) and writes the new state and events in the same transaction.
#include "boundary.h"  // must be first: postgres.h

extern "C" {
#include "miscadmin.h"
}

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/restore_point.h"
#include "core/states.h"
#include "gucs.h"
#include "spi.h"
#include "upgrade_step.h"

namespace safe_upgrade::pg {
namespace {

using nlohmann::json;

struct Upgrade {
  int64_t id = 0;
  std::string state, extname, from_version, to_version;
  json options;
  bool not_before_reached = true;
  bool approved = false;
  bool cancel_requested = false;
  std::optional<std::string> agent_job;
  int64_t cursor = 0;
  json snapshot;
  json report;
  double seconds_in_state = 0;
  bool has_restore_point = false;
};

bool OptionBool(const json& options, const char* key, bool fallback) {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return *it == "true" || *it == "on";
  return fallback;
}

json ParseJson(const std::optional<std::string>& text) {
  if (!text || text->empty()) return json::object();
  try {
    return json::parse(*text);
  } catch (...) {
    return json::object();
  }
}

std::optional<Upgrade> LoadUpgrade(int64_t id) {
  auto r = SpiExec(
      "SELECT state, extname, from_version, to_version, options::text, (not_before <= now())::text, "
      "(approved_at IS NOT NULL)::text, cancel_requested::text, agent_job, agent_job_cursor::text, "
      "snapshot::text, report::text, extract(epoch FROM clock_timestamp() - updated_at)::text, "
      "EXISTS (SELECT 1 FROM safe_upgrade.restore_points rp WHERE rp.upgrade_id = u.id)::text "
      "FROM safe_upgrade.upgrades u WHERE id = $1::bigint FOR UPDATE",
      {std::to_string(id)});
  if (r.rows.empty()) return std::nullopt;
  const auto& row = r.rows[0];
  Upgrade u;
  u.id = id;
  u.state = *row[0];
  u.extname = *row[1];
  u.from_version = *row[2];
  u.to_version = *row[3];
  u.options = ParseJson(row[4]);
  u.not_before_reached = row[5] == std::optional<std::string>("true");
  u.approved = row[6] == std::optional<std::string>("true");
  u.cancel_requested = row[7] == std::optional<std::string>("true");
  u.agent_job = row[8];
  u.cursor = row[9] ? std::stoll(*row[9]) : 0;
  u.snapshot = ParseJson(row[10]);
  u.report = ParseJson(row[11]);
  u.seconds_in_state = row[12] ? std::stod(*row[12]) : 0;
  u.has_restore_point = row[13] == std::optional<std::string>("true");
  return u;
}

void AddEvent(int64_t id, const std::string& phase, const std::string& level, const std::string& message,
              const json& detail = json::object(), const std::optional<std::string>& at = std::nullopt) {
  SpiExec(
      "INSERT INTO safe_upgrade.events (upgrade_id, at, phase, level, message, detail) "
      "VALUES ($1::bigint, coalesce($2::timestamptz, clock_timestamp()), $3, $4, $5, $6::jsonb)",
      {std::to_string(id), at, phase, level, message, detail.dump()});
}

void Transition(Upgrade& u, const std::string& to, const std::optional<std::string>& error = std::nullopt) {
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET state = $2, updated_at = now(), phase_started_at = now(), "
      "agent_job = NULL, agent_job_cursor = 0, progress = NULL, error = coalesce($3, error) WHERE id = $1::bigint",
      {std::to_string(u.id), to, error});
  json detail = {{"from", u.state}, {"to", to}};
  std::string message = "state " + u.state + " -> " + to;
  if (error) message += ": " + *error;
  AddEvent(u.id, to, error && (to == "failed" || to == "blocked" || to == "rollback_failed") ? "error" : "info",
           message, detail);
  u.state = to;
}

// The state stays; its next step starts a new agent job.
void ForgetAgentJob(const Upgrade& u) {
  SpiExec("UPDATE safe_upgrade.upgrades SET agent_job = NULL, agent_job_cursor = 0, progress = NULL "
          "WHERE id = $1::bigint",
          {std::to_string(u.id)});
}

void MergeReport(const Upgrade& u, const std::string& key, const json& value) {
  SpiExec("UPDATE safe_upgrade.upgrades SET report = report || jsonb_build_object($2::text, $3::jsonb) "
          "WHERE id = $1::bigint",
          {std::to_string(u.id), key, value.dump()});
}

void StoreDependencyRows(const Upgrade& u, const std::string& datname, const json& rows,
                         const std::string& phase) {
  if (!rows.is_array()) return;
  for (const auto& r : rows) {
    SpiExec(
        "INSERT INTO safe_upgrade.dependency_snapshots (upgrade_id, datname, phase, object_type, "
        "object_schema, "
        "object_identity, depends_on_type, depends_on_identity, deptype) "
        "VALUES ($1::bigint, $9, $2, $3, $4, $5, $6, $7, $8::\"char\") ON CONFLICT DO NOTHING",
        {std::to_string(u.id), phase, r.value("object_type", ""),
         r.contains("object_schema") && r["object_schema"].is_string()
             ? std::optional<std::string>(r["object_schema"].get<std::string>())
             : std::nullopt,
         r.value("object_identity", ""), r.value("depends_on_type", ""), r.value("depends_on_identity", ""),
         r.value("deptype", "n"), datname});
  }
}

// Each database's part of a job's result (result.databases[]) goes to its upgrade_databases row,
// under report.<phase>, with the outcome ok() decides.
template <typename Ok>
void RecordPerDatabase(const Upgrade& u, const std::string& phase, const json& result, Ok ok,
                       const char* good, const char* bad) {
  if (!result.contains("databases") || !result["databases"].is_array()) return;
  for (const auto& part : result["databases"]) {
    if (!part.is_object() || !part.contains("datname")) continue;
    bool passed = ok(part);
    SpiExec(
        "UPDATE safe_upgrade.upgrade_databases SET report = report || jsonb_build_object($3::text, "
        "$4::jsonb), "
        "outcome = $5, error = $6 WHERE upgrade_id = $1::bigint AND datname = $2",
        {std::to_string(u.id), part.value("datname", ""), phase, part.dump(),
         std::string(passed ? good : bad),
         passed ? std::nullopt
                : std::optional<std::string>(result.value("reason", result.value("error", "")))});
  }
}

bool AllChecksPassed(const json& part) {
  for (const auto& c : part.value("checks", json::array()))
    if (!c.value("ok", false)) return false;
  return true;
}

// The parts of a finished job's result that belong to each database, however the job ended: the
// dry run (passed unless a check failed or the dry run failed there), the apply (committed or
// not), the verification (every check passed and the extension at its target).
void RecordDatabaseResults(const Upgrade& u, const json& result) {
  const std::string to = u.to_version;
  const std::string failed_in = result.value("datname", "");
  if (u.state == "dry_running")
    RecordPerDatabase(
        u, "dry_run", result,
        [&failed_in](const json& part) {
          return AllChecksPassed(part) && part.value("datname", "") != failed_in;
        },
        "dry_run_passed", "dry_run_failed");
  else if (u.state == "applying")
    RecordPerDatabase(
        u, "apply", result, [](const json& part) { return part.value("committed", false); }, "applied",
        "not_applied");
  else if (u.state == "verifying")
    RecordPerDatabase(
        u, "verify", result,
        [&to](const json& part) { return AllChecksPassed(part) && part.value("extversion", "") == to; },
        "verified", "verify_failed");
}

// Creates the restore point after the snapshot's backup, records it, switches WAL. A restore point
// that is not after the backup can never be reached from it: the upgrade fails (production is
// untouched) instead of trying again at every pass.
void CreateRestorePoint(Upgrade& u) {
  std::string stop_lsn = u.snapshot.value("backup_stop_lsn", "");
  if (stop_lsn.empty()) throw std::runtime_error("the snapshot has no backup_stop_lsn; cannot place a restore point");
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
        u, "failed",
        "restore point LSN " + *row[0] + " is not after the snapshot's backup stop LSN " + stop_lsn +
            ", so a rollback could never reach it; production was not touched. Begin the upgrade "
            "again for a new snapshot.");
  SpiExec(
      "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, xid, backup_stop_lsn, wal_segment) "
      "VALUES ($1::bigint, $2, $3::pg_lsn, $4::int, $5::xid8, $6::pg_lsn, $7)",
      {std::to_string(u.id), *name, *row[0], *row[3], *row[4], stop_lsn, *row[2]});
  SpiExec("SELECT pg_switch_wal()");
  AddEvent(u.id, "restore_point", "info",
           "restore point " + *name + " created at LSN " + *row[0] + " (after backup stop LSN " + stop_lsn +
               "); waiting for WAL segment " + *row[2] + " to be archived",
           {{"name", *name}, {"lsn", *row[0]}, {"timeline", std::stoi(*row[3])}, {"wal_segment", *row[2]},
            {"backup_stop_lsn", stop_lsn}, {"xid", *row[4]}});
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

std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// Production may have been touched, but the agent lost or failed the apply job: decide from the
// installed version in every database, never by running the upgrade again. The journal alone is
// not enough: a committed apply that something later undid must not be verified as if it were
// there. Committed in some databases only: the cluster is half upgraded, and one point-in-time
// recovery puts every database back.
void ResolveApply(Upgrade& u, AgentClient& agent, const AgentJournal& journal, const std::string& why) {
  std::map<std::string, std::string> versions;
  AgentCallError err = agent.GetInstalledVersions(u.id, versions);
  if (!err.ok || versions.empty()) {
    std::string problem = err.ok ? std::string("the agent reported no database") : err.message;
    if (u.report.value("apply_resolution_waits_for", "") != problem) {
      MergeReport(u, "apply_resolution_waits_for", problem);
      AddEvent(u.id, "applying", "warning",
               why + "; the installed versions cannot be read yet (" + problem +
                   "), so the outcome is decided once they can");
    }
    return;
  }
  std::vector<std::string> upgraded, not_upgraded;
  for (const auto& [datname, version] : versions)
    (version == u.to_version ? upgraded : not_upgraded)
        .push_back(datname + " (" + (version.empty() ? "not installed" : version) + ")");
  json detail = {{"journal_apply", journal.apply}, {"extversions", versions}};
  if (not_upgraded.empty()) {
    AddEvent(
        u.id, "applying", "warning",
        why + "; " + u.extname + " is at " + u.to_version + " in " + JoinList(upgraded) +
            ", so the apply committed: verifying it (and rolling back if that fails), not applying it again",
        detail);
    Transition(u, "verifying");
  } else if (upgraded.empty() && (journal.apply == "committed" || journal.apply == "partially_committed")) {
    Transition(
        u, "failed",
        why + "; the agent's journal says the apply committed, but " + u.extname + " is not at " +
            u.to_version + " in " + JoinList(not_upgraded) +
            " (undone since, for example by a point-in-time recovery); the upgrade is not applied again");
  } else if (upgraded.empty()) {
    Transition(u, "failed",
               why + "; the apply did not commit: " + u.extname + " is still at its version in " +
                   JoinList(not_upgraded) + " and the upgrade is not applied again");
  } else if (OptionBool(u.options, "auto_rollback", true)) {
    AddEvent(u.id, "applying", "error",
             why + "; the upgrade committed in " + JoinList(upgraded) + " but not in " +
                 JoinList(not_upgraded) + ": rolling the whole cluster back to the restore point",
             detail);
    Transition(u, "rolling_back");
  } else {
    Transition(u, "failed",
               why + "; the upgrade committed in " + JoinList(upgraded) + " but not in " +
                   JoinList(not_upgraded) +
                   "; auto_rollback is off, so those stay upgraded (run safe_upgrade.rollback(" +
                   std::to_string(u.id) + ") to undo it)");
  }
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
  AddEvent(
      u.id, "scheduled", "info",
      "waiting for upgrade " + std::to_string(other) +
          " to end: it is between its restore point and its end, and a rollback rewinds the whole cluster, "
          "so only one upgrade at a time may be there",
      {{"waiting_for_upgrade", other}});
}

double NowEpochSeconds() {
  return std::stod(
      SpiExec("SELECT extract(epoch FROM clock_timestamp())::float8::text").Value().value_or("0"));
}

// Seconds to wait before verification runs again after it could not run (not a failed check):
// 5 s, doubling, at most a minute.
int VerifyRetryDelaySeconds(int attempts) { return std::min(60, 5 << std::min(attempts - 1, 4)); }

void OnJobFailed(Upgrade& u, AgentClient& agent, const std::string& error, const json& result,
                 const AgentJournal& journal = {});

void OnJobSucceeded(Upgrade& u, AgentClient& agent, const json& result) {
  if (u.cancel_requested && (u.state == "snapshotting" || u.state == "dry_running")) {
    if (u.state == "dry_running") MergeReport(u, "dry_run", result);
    Transition(u, "cancelled", std::string("cancelled by request"));
    return;
  }
  if (u.state == "scheduled") {
    // The rollback target is prepared (or the cold path chosen); the restore point comes next.
    MergeReport(u, "rollback_target", result);
    ForgetAgentJob(u);
  } else if (u.state == "snapshotting") {
    SpiExec("UPDATE safe_upgrade.upgrades SET snapshot = $2::jsonb WHERE id = $1::bigint",
            {std::to_string(u.id), result.dump()});
    Transition(u, "dry_running");
  } else if (u.state == "dry_running") {
    MergeReport(u, "dry_run", result);
    for (const auto& part : result.value("databases", json::array()))
      StoreDependencyRows(u, part.value("datname", ""), part.value("dependency_after", json::array()),
                          "after");
    if (OptionBool(u.options, "dry_run_only", false))
      Transition(u, "validated");
    else if (OptionBool(u.options, "require_approval", false) && !u.approved)
      Transition(u, "awaiting_approval");
    else
      Transition(u, "scheduled");
  } else if (u.state == "applying") {
    MergeReport(u, "apply", result);
    Transition(u, "verifying");
  } else if (u.state == "verifying") {
    MergeReport(u, "verify", result);
    const std::string to = u.to_version;
    // "succeeded" promises the extension is at its target version on production, everywhere.
    std::vector<std::string> behind;
    for (const auto& part : result.value("databases", json::array()))
      if (part.value("extversion", "") != to)
        behind.push_back(part.value("datname", "") + " (" + part.value("extversion", "not installed") + ")");
    if (!result.contains("databases") || result["databases"].empty())
      behind.push_back("every database (none reported)");
    if (!behind.empty()) {
      OnJobFailed(u, agent, u.extname + " is not at " + to + " on production in " + JoinList(behind),
                  json{{"checks_failed", true}});
      return;
    }
    Transition(u, "succeeded");
  } else if (u.state == "rolling_back") {
    MergeReport(u, "rollback", result);
    Transition(u, result.value("state", std::string("rolled_back")));
  }
}

void OnJobFailed(Upgrade& u, AgentClient& agent, const std::string& error, const json& result,
                 const AgentJournal& journal) {
  if (u.cancel_requested && (u.state == "snapshotting" || u.state == "dry_running")) {
    Transition(u, "cancelled", "cancelled by request (the " + u.state + " step had failed: " + error + ")");
    return;
  }
  if (u.state == "scheduled") {
    Transition(u, "failed", "could not prepare the rollback target: " + error);
  } else if (u.state == "snapshotting") {
    Transition(u, "failed", "snapshot failed: " + error);
  } else if (u.state == "dry_running") {
    MergeReport(u, "dry_run", result);
    Transition(u, "blocked", "dry run failed: " + error);
  } else if (u.state == "applying") {
    MergeReport(u, "apply", result);
    // "failed" promises production untouched: an apply job can fail after its COMMIT (a journal
    // write, a lost commit whose resolution timed out, a later database), and the installed
    // versions tell.
    ResolveApply(u, agent, journal, "apply failed: " + error);
  } else if (u.state == "verifying") {
    MergeReport(u, "verify", result);
    if (!result.value("checks_failed", false)) {
      // The checks could not run (server restarting, connection refused, pg_hba): that says nothing
      // about the upgrade, so it is never a failed check and never a reason for a PITR by itself.
      int attempts = u.report.value("verify_attempts", 0) + 1;
      int delay = VerifyRetryDelaySeconds(attempts);
      MergeReport(u, "verify_attempts", attempts);
      SpiExec(
          "UPDATE safe_upgrade.upgrades SET report = report || jsonb_build_object('verify_retry_at', "
          "extract(epoch FROM clock_timestamp())::float8 + $2::int) WHERE id = $1::bigint",
          {std::to_string(u.id), std::to_string(delay)});
      AddEvent(u.id, "verifying", "warning",
               "verification could not run (" + error + "); trying again in " + std::to_string(delay) +
                   " s (attempt " + std::to_string(attempts) + ")",
               {{"attempt", attempts}, {"retry_in_s", delay}});
      ForgetAgentJob(u);
      return;
    }
    if (OptionBool(u.options, "auto_rollback", true)) {
      AddEvent(u.id, "verifying", "error", "health checks failed on production: " + error + "; rolling back");
      Transition(u, "rolling_back");
    } else {
      Transition(u, "failed",
                 "health checks failed on production: " + error +
                     "; auto_rollback is off, so the upgrade stays applied (run safe_upgrade.rollback(" +
                     std::to_string(u.id) + ") to undo it)");
    }
  } else if (u.state == "rolling_back") {
    if (result.value("stage", "") == "precheck") {
      // Nothing was stopped or moved: the rollback was refused before it began.
      std::string before = u.report.value("state_before_rollback", "");
      if (!before.empty()) {
        AddEvent(u.id, "rolling_back", "error", "rollback refused: " + error + "; nothing was changed");
        MergeReport(u, "rollback_refused", json{{"error", error}});
        Transition(u, before);
        return;
      }
      Transition(u, "rollback_failed", "rollback could not start: " + error + "; production still runs the upgrade");
      return;
    }
    MergeReport(u, "rollback", result);
    Transition(u, "rollback_failed", error);
  }
}

// Copies the job's new events into the catalog and acts on its end.
void FollowJob(Upgrade& u, AgentClient& agent, const AgentJournal& journal) {
  AgentJob job;
  AgentCallError err = agent.GetJob(*u.agent_job, u.cursor, job);
  if (err.not_found) {
    // The agent restarted and forgot the job.
    if (u.state == "applying") return ResolveApply(u, agent, journal, "the agent restarted during the apply");
    if (u.state == "rolling_back") return;  // the agent resumes rollbacks itself on start
    AddEvent(u.id, u.state, "warning", "the agent restarted during " + u.state + "; starting the step again");
    ForgetAgentJob(u);
    return;
  }
  if (!err.ok) {
    if (!ProductionMayBeTouched(u.state) && u.seconds_in_state > guc_agent_unreachable_timeout_s)
      Transition(u, "failed", "the agent stopped answering during " + u.state + ": " + err.message);
    return;
  }
  for (const auto& e : job.events)
    AddEvent(u.id, e.phase, e.level, e.message, ParseJson(e.detail_json), e.at.empty() ? std::nullopt
                                                                                        : std::optional<std::string>(e.at));
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET agent_job_cursor = $2::bigint, progress = nullif($3::float8, -1), "
      "updated_at = CASE WHEN $4::boolean THEN now() ELSE updated_at END WHERE id = $1::bigint",
      {std::to_string(u.id), std::to_string(job.next_cursor), std::to_string(job.progress),
       job.events.empty() ? "false" : "true"});
  if (job.state != "succeeded" && job.state != "failed") return;
  json result = ParseJson(job.result_json);
  RecordDatabaseResults(u, result);
  if (job.state == "succeeded") OnJobSucceeded(u, agent, result);
  if (job.state == "failed") OnJobFailed(u, agent, job.error, result, journal);
}

void StartJob(Upgrade& u, AgentClient& agent, const std::string& kind, const AgentJournal& journal = {}) {
  std::string job_id;
  AgentCallError err = agent.StartJob(ParseJobKind(kind).value(), u.id, job_id);
  if (err.ok) {
    SpiExec("UPDATE safe_upgrade.upgrades SET agent_job = $2, agent_job_cursor = 0, updated_at = now() "
            "WHERE id = $1::bigint",
            {std::to_string(u.id), job_id});
    return;
  }
  if (err.busy) return;  // another job is running; try on the next pass
  if (err.refused) {
    // The agent will not run this job (the upgrade is in a state it does not accept, its snapshot
    // is gone, ...): waiting would wait forever, so the upgrade ends with the agent's reason.
    std::string why = "the agent refused the " + kind + " job: " + err.message;
    if (u.state == "applying") return ResolveApply(u, agent, journal, why);
    if (u.state == "rolling_back")
      return Transition(u, "rollback_failed", why + "; production still runs the upgrade");
    if (!ProductionMayBeTouched(u.state))
      return Transition(u, "failed", why + "; production was not touched");
  }
  // Verification that cannot start is verification that cannot run: retried with backoff.
  if (u.state == "verifying")
    return OnJobFailed(u, agent, "the agent could not start it: " + err.message, json::object(), journal);
  if (!ProductionMayBeTouched(u.state) && u.seconds_in_state > guc_agent_unreachable_timeout_s)
    Transition(u, "failed", "the agent is unreachable at " + agent.address() + ": " + err.message +
                                "; production was not touched");
}

void StartJobForState(Upgrade& u, AgentClient& agent, const AgentJournal& journal) {
  if (u.state == "applying" && journal.apply != "none")
    return ResolveApply(u, agent, journal,
                        "the apply was interrupted (journal: apply " + journal.apply + ")");
  StartJob(u, agent, JobKindForState(u.state), journal);
}

void StepUpgrade(Upgrade& u, AgentClient& agent) {
  AgentJournal journal;
  bool touched_or_scheduled = ProductionMayBeTouched(u.state) || u.state == "scheduled";
  if (touched_or_scheduled) {
    // From here on the agent's journal is the authority: a rollback it has journaled (even one
    // that PITR hid from this catalog) must be left to the agent, and an apply is never re-run.
    AgentCallError err = agent.GetJournal(u.id, journal);
    if (!err.ok) return;
    if (journal.rollback != "none") return;
  }

  if (u.cancel_requested && (u.state == "queued" || u.state == "awaiting_approval" || u.state == "scheduled") &&
      !u.has_restore_point) {
    Transition(u, "cancelled", std::string("cancelled by request"));
    return;
  }

  if (u.state == "queued") {
    Transition(u, "snapshotting");
  } else if (u.state == "awaiting_approval") {
    if (u.approved) Transition(u, "scheduled");
  } else if (u.state == "scheduled") {
    if (!u.not_before_reached) return;
    if (!u.has_restore_point) {
      if (auto reason = SnapshotOffTimeline(u)) return Transition(u, "failed", *reason);
      if (auto other = UpgradePastItsRestorePoint(u)) return WaitForOtherUpgrade(u, *other);
      // The rollback target is copied before the restore point exists (it waits for it in the
      // archive), so its copy never widens the window of writes a rollback discards.
      if (!u.report.contains("rollback_target"))
        return u.agent_job ? FollowJob(u, agent, journal) : StartJob(u, agent, "rollback_target");
      return CreateRestorePoint(u);
    }
    std::string segment, archiver;
    if (RestorePointArchived(u, segment, archiver)) {
      AddEvent(u.id, "restore_point", "info", "WAL segment " + segment + " with the restore point is archived");
      Transition(u, "applying");
    } else if (u.seconds_in_state > guc_archive_wait_timeout_s) {
      Transition(u, "failed",
                 "the WAL segment " + segment + " holding the restore point was not archived within " +
                     std::to_string(guc_archive_wait_timeout_s) + " s (" + archiver +
                     "); production was not touched. Check archive_command and the archive directory.");
    }
  } else if (!JobKindForState(u.state).empty()) {
    if (!u.agent_job && u.state == "verifying" && u.report.value("verify_retry_at", 0.0) > NowEpochSeconds())
      return;
    if (!u.agent_job)
      StartJobForState(u, agent, journal);
    else
      FollowJob(u, agent, journal);
  }
}

// One step of one upgrade, in the caller's transaction. True when it moved to another in-flight
// state, whose first step can run at once instead of a poll interval later (a rollback starts
// sooner, for one).
bool Step(int64_t id, AgentClient& agent) {
  auto loaded = LoadUpgrade(id);
  if (!loaded || !IsInFlightState(loaded->state)) return false;
  const std::string before = loaded->state;
  StepUpgrade(*loaded, agent);
  return loaded->state != before && IsInFlightState(loaded->state);
}

}  // namespace

bool RunSchedulerPass(AgentClient& agent) {
  std::vector<int64_t> ids;
  {
    SpiTransaction tx;
    auto ext = SpiExec("SELECT 1 FROM pg_extension WHERE extname = 'safe_upgrade'");
    if (!ext.rows.empty()) {
      auto r = SpiExec(
          "SELECT id FROM safe_upgrade.upgrades WHERE state NOT IN "
          "('succeeded','validated','blocked','failed','rolled_back','rollback_failed','cancelled') ORDER BY id");
      for (const auto& row : r.rows) ids.push_back(std::stoll(*row[0]));
    }
    tx.Commit();
  }
  static std::map<int64_t, std::string> last_problem;
  for (int64_t id : ids) {
    CHECK_FOR_INTERRUPTS();
    std::string problem;
    try {
      for (int round = 0; round < 3; ++round) {
        SpiTransaction tx;
        bool moved = Step(id, agent);
        tx.Commit();
        if (!moved) break;
      }
    } catch (const std::exception& e) {
      problem = e.what();
    }
    // Logged once per distinct problem, outside the catch block, so a stuck upgrade cannot flood the log.
    if (!problem.empty() && last_problem[id] != problem)
      ereport(WARNING, (errmsg("safe_upgrade: upgrade %lld: %s", static_cast<long long>(id), problem.c_str())));
    last_problem[id] = problem;
  }
  return !ids.empty();
}

}  // namespace safe_upgrade::pg
