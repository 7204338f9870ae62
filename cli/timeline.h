// The states an upgrade went through and how long each took, from its state-transition events.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "upgrade_doc.h"

namespace safe_upgrade::cli {

// A state transition event ("state a -> b", detail {"from", "to"}); returns the new state.
std::optional<std::string> TransitionTarget(const nlohmann::json& event);

struct PhaseSpan {
  std::string state, started_at;
  double start_epoch = 0;
  std::optional<double> duration_s;  // nullopt for the final state of a finished upgrade
};
// The states the upgrade went through, from its transition events (doc.events must be all of them).
std::vector<PhaseSpan> PhaseTimeline(const UpgradeDoc& doc);

}  // namespace safe_upgrade::cli
