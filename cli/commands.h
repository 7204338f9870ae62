// The safe-upgrade command line: one function per subcommand, each returning the exit code.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace safe_upgrade::cli {

// Exit codes, as documented in DESIGN.md and the README.
enum ExitCode : int {
  kExitOk = 0,         // succeeded or validated
  kExitFailure = 1,    // any other failure
  kExitUsage = 2,      // bad usage
  kExitBlocked = 3,    // blocked; production untouched
  kExitRolledBack = 4, // rolled back
  kExitRollbackFailed = 5,
};

struct GlobalOptions {
  std::string dsn;  // empty: libpq's environment (PGHOST, PGPORT, ...)
};

// Adds the "sandbox" subcommand tree; the returned flag tells main which ran.
void AddSandboxCommands(CLI::App& app, int& exit_code);

}  // namespace safe_upgrade::cli
