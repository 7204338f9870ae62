// State vocabulary of the command line (see state_words.h).
#include "state_words.h"

#include <set>

namespace safe_upgrade::cli {

bool IsTerminalState(const std::string& state) {
  static const std::set<std::string> terminal = {"succeeded",   "validated",       "blocked",  "failed",
                                                 "rolled_back", "rollback_failed", "cancelled"};
  return terminal.count(state) > 0;
}

int ExitCodeForState(const std::string& state) {
  if (state == "succeeded" || state == "validated") return 0;
  if (state == "blocked") return 3;
  if (state == "rolled_back") return 4;
  if (state == "rollback_failed") return 5;
  return 1;
}

std::string StateMeaning(const std::string& state) {
  if (state == "queued") return "waiting for the scheduler (the background worker) to pick it up";
  if (state == "snapshotting") return "taking a verified base backup of production, the rollback target";
  if (state == "dry_running") return "rehearsing the upgrade and the health checks on a throwaway clone";
  if (state == "awaiting_approval")
    return "the dry run passed; waiting for approval before touching production";
  if (state == "scheduled") return "parking a rollback target, then the restore point and its archived WAL";
  if (state == "applying") return "running ALTER EXTENSION ... UPDATE on production, under lock limits";
  if (state == "verifying") return "running the health checks on production";
  if (state == "rolling_back") return "restoring production to the restore point (the server restarts)";
  if (state == "succeeded") return "the upgrade is applied and production passed its health checks";
  if (state == "validated") return "the dry run passed; production was not touched (dry run only)";
  if (state == "blocked") return "the dry run failed; production was not touched";
  if (state == "failed") return "the upgrade stopped before it could finish";
  if (state == "rolled_back") return "the upgrade failed on production and production was restored";
  if (state == "rollback_failed") return "the upgrade failed on production and so did the rollback";
  if (state == "cancelled") return "cancelled on request";
  return "";
}

}  // namespace safe_upgrade::cli
