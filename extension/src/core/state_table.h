// The upgrade state machine as one table: every state, what it means, whether it is in flight,
// whether production may have been touched, the agent job it runs and the state that follows on
// success and on each kind of failure. Everything else that names states (the SQL CHECK and
// state functions, the agent's state lists, the CLI) derives from it or is checked against it by
// tests/unit/core/state_table_test.cpp. Pure C++.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/job_kinds.h"

namespace safe_upgrade {

// In table order: the in-flight states in pipeline order, then the terminal states.
enum class UpgradeState {
  kQueued,
  kSnapshotting,
  kDryRunning,
  kAwaitingApproval,
  kScheduled,
  kApplying,
  kVerifying,
  kRollingBack,
  kSucceeded,
  kValidated,
  kBlocked,
  kFailed,
  kRolledBack,
  kRollbackFailed,
  kCancelled,
};

// When a requested cancellation (safe_upgrade.cancel()) takes effect in a state.
enum class Cancel {
  kNever,     // production may be touched (or the upgrade has ended): a cancel is refused
  kAtStep,    // at the state's next step, as long as no restore point exists
  kAtJobEnd,  // when the state's job ends, whichever way it ends
};

struct StateRow {
  UpgradeState state;
  std::string_view name;  // as stored in upgrades.state
  bool in_flight;         // false: terminal
  // A restore point exists and the apply may have run: production's state is the agent's to tell.
  bool production_may_be_touched;
  // From the rollback target's preparation to the end of a rollback: the agent's journal is read
  // before each step (a rollback it journaled is left to it, an apply is never re-run), and the
  // agent keeps the upgrade's rollback target.
  bool may_roll_back;
  // A terminal state that ends in an error a person must act on: its transition logs at "error".
  bool failure_end;
  Cancel cancel;
  std::optional<JobKind> job;  // the agent job the state follows
  // Where the job's result goes: that key of upgrades.report ("" for the snapshot, which has a
  // column of its own).
  std::string_view result_key;
  // The state after this one's work succeeded. dry_running: unless dry_run_only (validated) or
  // require_approval without approval (awaiting_approval); awaiting_approval: once approved;
  // scheduled: once the restore point is archived (its job, the rollback target, is one step of
  // it); rolling_back: what the rollback job reports, rolled_back unless it says otherwise.
  UpgradeState on_success;
  // By JobFailureKind kFailed, kChecksFailed, kCouldNotRun, kRefused. The state itself: it stays
  // (verifying: the checks run again after a backoff; applying: the installed versions decide
  // between verifying, rolling_back and failed). verifying's rolling_back is failed when
  // auto_rollback is off; rolling_back's refused rollback returns to the state it left, if known.
  std::array<UpgradeState, 4> on_failure;
  // Terminal states: the CLI's exit code (0 done, 1 stopped, 3 blocked, 4 rolled back, 5 rollback
  // failed). In flight: -1.
  int exit_code;
  std::string_view meaning;  // for people
};

inline constexpr UpgradeState kAllStates[] = {
    UpgradeState::kQueued,           UpgradeState::kSnapshotting,   UpgradeState::kDryRunning,
    UpgradeState::kAwaitingApproval, UpgradeState::kScheduled,      UpgradeState::kApplying,
    UpgradeState::kVerifying,        UpgradeState::kRollingBack,    UpgradeState::kSucceeded,
    UpgradeState::kValidated,        UpgradeState::kBlocked,        UpgradeState::kFailed,
    UpgradeState::kRolledBack,       UpgradeState::kRollbackFailed, UpgradeState::kCancelled};

const StateRow& TableRow(UpgradeState state);

std::string_view StateName(UpgradeState state);
std::optional<UpgradeState> ParseState(std::string_view name);

bool IsTerminal(UpgradeState state);
bool IsInFlight(UpgradeState state);
// The same for a stored name; unknown names are neither.
bool IsTerminalState(std::string_view name);
bool IsInFlightState(std::string_view name);
bool ProductionMayBeTouched(UpgradeState state);
std::string_view StateMeaning(UpgradeState state);
// Terminal states only.
std::optional<int> ExitCode(UpgradeState state);

// The in-flight states in pipeline order (queued ... rolling_back), and the terminal ones.
std::vector<UpgradeState> InFlightStates();
std::vector<UpgradeState> TerminalStates();
// Where an in-flight state sits in the pipeline (0 for queued); -1 for terminal states.
int PipelineRank(UpgradeState state);

// The names of the states whose row has column set, e.g. StateNamesWhere(&StateRow::may_roll_back).
std::vector<std::string> StateNamesWhere(bool StateRow::*column);
std::vector<std::string> InFlightStateNames();
std::vector<std::string> TerminalStateNames();

// The state that runs a job of this kind (every kind has exactly one).
UpgradeState StateForJob(JobKind kind);
// The next state when the state's job failed this way (kNone: the state itself).
UpgradeState OnFailure(UpgradeState state, JobFailureKind kind);

}  // namespace safe_upgrade
