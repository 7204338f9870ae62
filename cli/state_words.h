// The command line's words for upgrade states: which are terminal, the `run` exit code of each
// terminal state, and what each state means in a few plain words.
#pragma once

#include <string>

#include "core/state_table.h"

namespace safe_upgrade::cli {

bool IsTerminalState(const std::string& state);
// The `run` exit code for a terminal state (0, 1, 3, 4, 5).
int ExitCodeForState(const std::string& state);
// What a state means, in a few plain words ("" for a word that is not a state).
std::string StateMeaning(const std::string& state);
// Whether a stored state name is that state.
inline bool StateIs(const std::string& name, UpgradeState state) { return name == StateName(state); }

}  // namespace safe_upgrade::cli
