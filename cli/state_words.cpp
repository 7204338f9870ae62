// State vocabulary of the command line (see state_words.h): read from the extension's state
// table, the one place that names states (extension/src/core/state_table.h).
#include "state_words.h"

#include "core/state_table.h"

namespace safe_upgrade::cli {

bool IsTerminalState(const std::string& state) { return safe_upgrade::IsTerminalState(state); }

int ExitCodeForState(const std::string& state) {
  auto parsed = ParseState(state);
  auto code = parsed ? ExitCode(*parsed) : std::nullopt;
  return code.value_or(1);
}

std::string StateMeaning(const std::string& state) {
  auto parsed = ParseState(state);
  return parsed ? std::string(safe_upgrade::StateMeaning(*parsed)) : "";
}

}  // namespace safe_upgrade::cli
