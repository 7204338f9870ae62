// The --json document of an upgrade (see upgrade_json.h).
#include "upgrade_json.h"

#include <cmath>

#include "output.h"
#include "state_words.h"
#include "timeline.h"

namespace safe_upgrade::cli {

using nlohmann::json;

json DocToJson(const UpgradeDoc& doc) {
  json phases = json::array();
  for (const auto& p : PhaseTimeline(doc))
    phases.push_back({{"state", p.state},
                      {"started_at", p.started_at},
                      {"duration_s", p.duration_s ? json(std::round(*p.duration_s * 1000) / 1000) : json()}});
  json events = json::array();
  for (const auto& e : doc.events) {
    json copy = e;
    copy.erase("at_epoch");
    events.push_back(copy);
  }
  std::string state = doc.State();
  const json& rollback = JsonMember(doc.Report(), "rollback");
  json window = JsonMember(rollback, "data_loss_window");
  return {{"id", doc.id},
          {"extname", doc.Extname()},
          {"from_version", doc.FromVersion()},
          {"to_version", doc.ToVersion()},
          {"state", state},
          {"terminal", IsTerminalState(state)},
          {"exit_code", IsTerminalState(state) ? json(ExitCodeForState(state)) : json()},
          {"error", JsonMember(doc.upgrade, "error").is_string() ? doc.upgrade["error"] : json()},
          {"options", JsonMember(doc.upgrade, "options")},
          {"created_at", JsonMember(doc.upgrade, "created_at")},
          {"updated_at", JsonMember(doc.upgrade, "updated_at")},
          {"progress", doc.upgrade.contains("progress") ? doc.upgrade["progress"] : json()},
          {"phases", phases},
          {"restore_point", doc.restore_point},
          {"databases", doc.databases},
          {"standbys", doc.standbys},
          {"data_loss_window", window.is_object() && !window.empty() ? window : json()},
          {"report", doc.Report()},
          {"events", events}};
}

}  // namespace safe_upgrade::cli
