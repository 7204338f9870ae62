// The safe-upgrade command line: each subcommand sets the exit code main returns.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace safe_upgrade::cli {

// Exit codes, as documented in DESIGN.md, the README and docs/cli.md.
enum ExitCode : int {
  kExitOk = 0,              // succeeded or validated
  kExitFailure = 1,         // any other failure
  kExitUsage = 2,           // bad usage
  kExitBlocked = 3,         // blocked; production untouched
  kExitRolledBack = 4,      // rolled back
  kExitRollbackFailed = 5,  // rollback failed
  kExitInterrupted = 130,   // Ctrl-C while following (the upgrade goes on)
};

struct GlobalOptions {
  std::string dsn;  // empty: libpq's environment (PGHOST, PGPORT, ...)
};

// `sandbox up|down|env`.
void AddSandboxCommands(CLI::App& app, int& exit_code);
// `plan`, `run`, `status`, `history`, `approve`, `cancel`, `rollback`.
void AddUpgradeCommands(CLI::App& app, const GlobalOptions& global, int& exit_code);

}  // namespace safe_upgrade::cli
