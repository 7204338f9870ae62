// Upgrade states.
#include "core/states.h"

#include <set>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {

bool IsTerminalState(const std::string& state) {
  static const std::set<std::string> terminal = {"succeeded",   "validated",       "blocked",  "failed",
                                                 "rolled_back", "rollback_failed", "cancelled"};
  return terminal.count(state) > 0;
}

bool IsInFlightState(const std::string& state) {
  static const std::set<std::string> in_flight = {"queued",    "snapshotting", "dry_running", "awaiting_approval",
                                                  "scheduled", "applying",     "verifying",   "rolling_back"};
  return in_flight.count(state) > 0;
}

bool ProductionMayBeTouched(const std::string& state) {
  return state == "applying" || state == "verifying" || state == "rolling_back";
}

std::string JobKindForState(const std::string& state) {
  if (state == "snapshotting") return "snapshot";
  if (state == "dry_running") return "dryrun";
  if (state == "applying") return "apply";
  if (state == "verifying") return "verify";
  if (state == "rolling_back") return "rollback";
  return "";
}

}  // namespace safe_upgrade
