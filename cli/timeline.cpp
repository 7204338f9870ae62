// The phase timeline of an upgrade (see timeline.h).
#include "timeline.h"

#include <algorithm>

#include "output.h"
#include "state_words.h"

namespace safe_upgrade::cli {

using nlohmann::json;

std::optional<std::string> TransitionTarget(const json& event) {
  const json& detail = JsonMember(event, "detail");
  if (!detail.is_object() || !detail.contains("to") || !detail.contains("from")) return std::nullopt;
  if (!detail["to"].is_string()) return std::nullopt;
  std::string to = detail["to"].get<std::string>();
  if (!IsTerminalState(to) && StateMeaning(to).empty()) return std::nullopt;  // not a state name
  return to;
}

std::vector<PhaseSpan> PhaseTimeline(const UpgradeDoc& doc) {
  std::vector<PhaseSpan> spans;
  PhaseSpan current{std::string(StateName(UpgradeState::kQueued)), JsonString(doc.upgrade, "created_at"),
                    doc.created_epoch, std::nullopt};
  auto open = [&](const std::string& state, const std::string& at, double epoch) {
    current.duration_s = std::max(0.0, epoch - current.start_epoch);
    spans.push_back(current);
    current = PhaseSpan{state, at, epoch, std::nullopt};
  };
  for (const auto& e : doc.events) {
    double at = JsonNumber(e, "at_epoch").value_or(doc.now_epoch);
    if (auto to = TransitionTarget(e)) {
      if (*to != current.state) open(*to, JsonString(e, "at"), at);
    } else if (JsonString(e, "phase") == doc.State() && IsTerminalState(doc.State()) &&
               current.state != doc.State()) {
      // The rollback writes its outcome as an event of the final phase, not as a transition.
      open(doc.State(), JsonString(e, "at"), at);
    }
  }
  if (current.state != doc.State() && !doc.State().empty())
    open(doc.State(), JsonString(doc.upgrade, "updated_at"), doc.updated_epoch);
  if (!IsTerminalState(current.state))
    current.duration_s = std::max(0.0, doc.now_epoch - current.start_epoch);
  spans.push_back(current);
  return spans;
}

}  // namespace safe_upgrade::cli
