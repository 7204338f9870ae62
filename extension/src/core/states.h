// The upgrade state machine's vocabulary: states, which are terminal, and which agent job each
// job-following state runs.
#pragma once

#include <string>

namespace safe_upgrade {

bool IsTerminalState(const std::string& state);
bool IsInFlightState(const std::string& state);
// True once production may have been touched (a restore point exists and apply may have run).
bool ProductionMayBeTouched(const std::string& state);
// "snapshot" for "snapshotting", ...; empty for states that follow no job.
std::string JobKindForState(const std::string& state);

}  // namespace safe_upgrade
