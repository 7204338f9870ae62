// Reading and writing an upgrade's row, its events and its databases' rows, and executing the
// core's decisions: the only SQL of the state machine besides the restore point's.
#include "upgrade_row.h"

#include "spi.h"
#include "upgrade_jobs.h"

namespace safe_upgrade::pg {

using nlohmann::json;

namespace {

bool IsTrue(const std::optional<std::string>& value) { return value == std::optional<std::string>("true"); }

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

}  // namespace

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
  auto state = ParseState(row[0].value_or(""));
  if (!state) return std::nullopt;
  Upgrade u;
  u.id = id;
  u.state = *state;
  u.extname = *row[1];
  u.from_version = *row[2];
  u.to_version = *row[3];
  u.options = ParseJson(row[4]);
  u.not_before_reached = IsTrue(row[5]);
  u.approved = IsTrue(row[6]);
  u.cancel_requested = IsTrue(row[7]);
  u.agent_job = row[8];
  u.cursor = row[9] ? std::stoll(*row[9]) : 0;
  u.snapshot = ParseJson(row[10]);
  u.report = ParseJson(row[11]);
  u.seconds_in_state = row[12] ? std::stod(*row[12]) : 0;
  u.has_restore_point = IsTrue(row[13]);
  return u;
}

void AddEvent(int64_t id, const NewEvent& event, const std::optional<std::string>& at) {
  SpiExec(
      "INSERT INTO safe_upgrade.events (upgrade_id, at, phase, level, message, detail) "
      "VALUES ($1::bigint, coalesce($2::timestamptz, clock_timestamp()), $3, $4, $5, $6::jsonb)",
      {std::to_string(id), at, event.phase, event.level, event.message, event.detail.dump()});
}

void Transition(Upgrade& u, UpgradeState to, const std::optional<std::string>& error) {
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET state = $2, updated_at = now(), phase_started_at = now(), "
      "agent_job = NULL, agent_job_cursor = 0, progress = NULL, error = coalesce($3, error) WHERE id = "
      "$1::bigint",
      {std::to_string(u.id), std::string(StateName(to)), error});
  AddEvent(u.id, TransitionEvent(u.state, to, error));
  u.state = to;
}

void ForgetAgentJob(const Upgrade& u) {
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET agent_job = NULL, agent_job_cursor = 0, progress = NULL "
      "WHERE id = $1::bigint",
      {std::to_string(u.id)});
}

void MergeReport(const Upgrade& u, const std::string& key, const json& value) {
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET report = report || jsonb_build_object($2::text, $3::jsonb) "
      "WHERE id = $1::bigint",
      {std::to_string(u.id), key, value.dump()});
}

void RecordDatabaseResults(const Upgrade& u, const json& result) {
  for (const auto& db : DatabaseOutcomes(u, result))
    SpiExec(
        "UPDATE safe_upgrade.upgrade_databases SET report = report || jsonb_build_object($3::text, "
        "$4::jsonb), "
        "outcome = $5, error = $6 WHERE upgrade_id = $1::bigint AND datname = $2",
        {std::to_string(u.id), db.datname, db.phase, db.part.dump(), db.outcome, db.error});
}

void Execute(Upgrade& u, const Decision& d, const json& result, AgentClient& agent,
             const AgentJournal& journal) {
  for (const auto& [key, value] : d.report) MergeReport(u, key, value);
  if (d.verify_retry_in_s)
    SpiExec(
        "UPDATE safe_upgrade.upgrades SET report = report || jsonb_build_object('verify_retry_at', "
        "extract(epoch FROM clock_timestamp())::float8 + $2::int) WHERE id = $1::bigint",
        {std::to_string(u.id), std::to_string(*d.verify_retry_in_s)});
  if (d.store_snapshot)
    SpiExec("UPDATE safe_upgrade.upgrades SET snapshot = $2::jsonb WHERE id = $1::bigint",
            {std::to_string(u.id), result.dump()});
  if (d.store_dependencies_after)
    for (const auto& part : result.value("databases", json::array()))
      StoreDependencyRows(u, part.value("datname", ""), part.value("dependency_after", json::array()),
                          "after");
  for (const auto& e : d.events) AddEvent(u.id, e);
  if (d.resolve_apply) ResolveApplyFromVersions(u, agent, journal, *d.resolve_apply);
  if (d.forget_job) ForgetAgentJob(u);
  if (d.next) Transition(u, *d.next, d.error);
}

double NowEpochSeconds() {
  return std::stod(
      SpiExec("SELECT extract(epoch FROM clock_timestamp())::float8::text").Value().value_or("0"));
}

}  // namespace safe_upgrade::pg
