// Following an upgrade live: phase lines with elapsed time, a progress bar while a backup or a
// clone copies, lock blockers, the approval prompt, reconnecting across the server restart of a
// rollback, and the final summary. Ctrl-C stops following, never the upgrade.
#pragma once

#include <cstdint>
#include <string>

namespace safe_upgrade::cli {

struct FollowOptions {
  std::string dsn;
  int64_t id = 0;
  bool json = false;              // the final document on stdout; live lines go to stderr
  bool ask_approval = true;       // prompt (or explain how to approve) at awaiting_approval
  int reconnect_timeout_s = 300;  // how long to keep retrying a lost connection
  int poll_interval_ms = 300;
};

// From now on Ctrl-C (SIGINT) only sets a flag that the follower reads: a Ctrl-C while begin()
// runs still lets the upgrade start, and is then reported like one while following.
void CatchInterrupts();

// Follows until the upgrade ends; returns the exit code (ExitCodeForState, 1 on errors, 130 on
// Ctrl-C). Prints the summary, or the --json document.
int FollowUpgrade(const FollowOptions& options);

}  // namespace safe_upgrade::cli
