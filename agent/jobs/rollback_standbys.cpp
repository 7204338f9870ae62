// The rollback's step once the primary runs at the restore point: the physical replication slots
// it had are created again (a restored copy has none), then every standby agent re-syncs its
// standby onto the primary's new timeline (jobs/standbys.h). The primary stays up whatever
// happens to a standby; the outcome says which standbys do not follow.
#include "base/fs_util.h"
#include "jobs/rollback_run.h"
#include "jobs/standbys.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

void RollbackRun::RestoreReplicationSlots() {
  if (rc_.physical_slots.empty()) return;
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  std::vector<std::string> created;
  for (const auto& slot : rc_.physical_slots) {
    // Reserved at once, so that the WAL a standby asks for from now on stays.
    auto r = conn->Exec(
        "SELECT pg_catalog.pg_create_physical_replication_slot($1, true) FROM (SELECT 1) one "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
        {slot});
    if (!r.Empty()) created.push_back(slot);
  }
  if (!created.empty()) {
    std::string names;
    for (const auto& slot : created) names += (names.empty() ? "" : ", ") + slot;
    Event("info", "replication slot(s) " + names + " created again on the restored primary",
          {{"slots", created}});
  }
}

void RollbackRun::BringBackStandbys() {
  RestoreReplicationSlots();
  nlohmann::json results = nlohmann::json::array();
  if (!config_.standbys.empty()) {
    Event("info", "re-syncing " + std::to_string(config_.standbys.size()) +
                      " standby(s) onto the restored primary's timeline");
    results = ResyncStandbys(ctx_, "rolling_back");
  }
  // Standbys that streamed when the upgrade began but have no agent here: replayed past the
  // restore point, they cannot follow the new timeline, and nothing here can bring them back.
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  // Whatever begin() knew of their agents: the configuration is what the agent has now.
  for (const auto& row : conn->Exec("SELECT name FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = $1::bigint "
                                    "ORDER BY name",
                                    {std::to_string(id_)})
                             .rows) {
    std::string name = row[0].value_or("");
    bool configured = false;
    for (const auto& standby : config_.standbys) configured = configured || standby.name == name;
    if (configured) continue;
    results.push_back({{"name", name},
                       {"outcome", "no_agent"},
                       {"error", "it streamed when the upgrade began, but no standby agent is configured for it "
                                 "([[standby]] in the primary agent's configuration): re-clone it by hand"}});
  }
  rc_.standbys = results;
  for (const auto& standby : rc_.standbys) {
    bool follows = AllStandbysStream(nlohmann::json::array({standby}));
    std::string error = standby.value("error", "");
    rc_.events.push_back(RollbackEvent{NowIso8601(), "rolling_back", follows ? "info" : "error",
                                       "standby " + standby.value("name", "") + ": " +
                                           standby.value("outcome", "") + (error.empty() ? "" : " (" + error + ")"),
                                       standby});
  }
}

std::string RollbackRun::StandbysProblem() const {
  if (AllStandbysStream(rc_.standbys)) return "";
  std::string out;
  for (const auto& standby : rc_.standbys) {
    if (AllStandbysStream(nlohmann::json::array({standby}))) continue;
    out += (out.empty() ? "" : "; ") + std::string("standby ") + standby.value("name", "") + " " +
           standby.value("outcome", "") + ": " + standby.value("error", "");
  }
  return "the primary was rolled back to restore point " + rc_.restore_point.name +
         " and runs, but not every standby follows it: " + out;
}

}  // namespace safe_upgrade
