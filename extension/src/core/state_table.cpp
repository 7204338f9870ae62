// The state table (see state_table.h). To add a state: add it to UpgradeState and kAllStates in
// pipeline order, give it a row here, then run the unit tests: they fail until the SQL (the CHECK
// on upgrades.state, _in_flight_states(), _terminal_states(), the one-in-flight index) lists it.
#include "core/state_table.h"

#include <iterator>
#include <stdexcept>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {
namespace {

using S = UpgradeState;
using J = JobKind;

enum Flags : unsigned {
  kTerminal = 0,
  kInFlight = 1,
  kTouched = 2,      // production may have been touched
  kMayRollBack = 4,  // the agent's journal is the authority; the rollback target is kept
  kFailureEnd = 8,
};
constexpr std::optional<JobKind> kNoJob = std::nullopt;

constexpr StateRow R(S state, std::string_view name, unsigned flags, Cancel cancel,
                     std::optional<JobKind> job, std::string_view result_key, S on_success,
                     std::array<S, 4> on_failure, int exit_code, std::string_view meaning) {
  return {state,
          name,
          (flags & kInFlight) != 0,
          (flags & kTouched) != 0,
          (flags & kMayRollBack) != 0,
          (flags & kFailureEnd) != 0,
          cancel,
          job,
          result_key,
          on_success,
          on_failure,
          exit_code,
          meaning};
}

// Every failure kind leads to the same state.
constexpr std::array<S, 4> All(S state) { return {state, state, state, state}; }

// A terminal state: no job, no way on.
constexpr StateRow End(S state, std::string_view name, unsigned flags, int exit_code,
                       std::string_view meaning) {
  return R(state, name, flags, Cancel::kNever, kNoJob, "", state, All(state), exit_code, meaning);
}

// Columns: state, name, flags, cancel, job, result key, on success, on failure (by kind: failed,
// checks failed, could not run, refused), exit code, meaning.
// clang-format off
constexpr StateRow kTable[] = {
    R(S::kQueued, "queued", kInFlight, Cancel::kAtStep, kNoJob, "",
      S::kSnapshotting, All(S::kQueued), -1,
      "waiting for the scheduler (the background worker) to pick it up"),
    R(S::kSnapshotting, "snapshotting", kInFlight, Cancel::kAtJobEnd, J::kSnapshot, "",
      S::kDryRunning, All(S::kFailed), -1,
      "taking a verified base backup of production, the rollback target"),
    R(S::kDryRunning, "dry_running", kInFlight, Cancel::kAtJobEnd, J::kDryRun, "dry_run",
      S::kScheduled, All(S::kBlocked), -1,
      "rehearsing the upgrade and the health checks on a throwaway clone"),
    R(S::kAwaitingApproval, "awaiting_approval", kInFlight, Cancel::kAtStep, kNoJob, "",
      S::kScheduled, All(S::kAwaitingApproval), -1,
      "the dry run passed; waiting for approval before touching production"),
    R(S::kScheduled, "scheduled", kInFlight | kMayRollBack, Cancel::kAtStep, J::kRollbackTarget, "rollback_target",
      S::kApplying, All(S::kFailed), -1,
      "parking a rollback target, then the restore point and its archived WAL"),
    R(S::kApplying, "applying", kInFlight | kTouched | kMayRollBack, Cancel::kNever, J::kApply, "apply",
      S::kVerifying, All(S::kApplying), -1,
      "running ALTER EXTENSION ... UPDATE on production, under lock limits"),
    R(S::kVerifying, "verifying", kInFlight | kTouched | kMayRollBack, Cancel::kNever, J::kVerify, "verify",
      S::kSucceeded, {S::kVerifying, S::kRollingBack, S::kVerifying, S::kVerifying}, -1,
      "running the health checks on production"),
    R(S::kRollingBack, "rolling_back", kInFlight | kTouched | kMayRollBack, Cancel::kNever, J::kRollback, "rollback",
      S::kRolledBack, All(S::kRollbackFailed), -1,
      "restoring production to the restore point (the server restarts)"),
    End(S::kSucceeded, "succeeded", kTerminal, 0, "the upgrade is applied and production passed its health checks"),
    End(S::kValidated, "validated", kTerminal, 0, "the dry run passed; production was not touched (dry run only)"),
    End(S::kBlocked, "blocked", kFailureEnd, 3, "the dry run failed; production was not touched"),
    End(S::kFailed, "failed", kFailureEnd, 1, "the upgrade stopped before it could finish"),
    End(S::kRolledBack, "rolled_back", kTerminal, 4, "the upgrade failed on production and production was restored"),
    End(S::kRollbackFailed, "rollback_failed", kFailureEnd, 5,
        "the upgrade failed on production and so did the rollback"),
    End(S::kCancelled, "cancelled", kTerminal, 1, "cancelled on request"),
};
// clang-format on

constexpr bool TableInEnumOrder() {
  for (size_t i = 0; i < std::size(kTable); ++i)
    if (static_cast<size_t>(kTable[i].state) != i || kAllStates[i] != kTable[i].state) return false;
  return std::size(kTable) == std::size(kAllStates);
}
static_assert(TableInEnumOrder(), "kTable and kAllStates list every UpgradeState once, in enum order");

std::vector<UpgradeState> StatesWhere(bool in_flight) {
  std::vector<UpgradeState> out;
  for (const auto& row : kTable)
    if (row.in_flight == in_flight) out.push_back(row.state);
  return out;
}

}  // namespace

const StateRow& TableRow(UpgradeState state) { return kTable[static_cast<size_t>(state)]; }

std::string_view StateName(UpgradeState state) { return TableRow(state).name; }

std::optional<UpgradeState> ParseState(std::string_view name) {
  for (const auto& row : kTable)
    if (row.name == name) return row.state;
  return std::nullopt;
}

bool IsTerminal(UpgradeState state) { return !TableRow(state).in_flight; }
bool IsInFlight(UpgradeState state) { return TableRow(state).in_flight; }

bool IsTerminalState(std::string_view name) {
  auto state = ParseState(name);
  return state && IsTerminal(*state);
}

bool IsInFlightState(std::string_view name) {
  auto state = ParseState(name);
  return state && IsInFlight(*state);
}

bool ProductionMayBeTouched(UpgradeState state) { return TableRow(state).production_may_be_touched; }

std::string_view StateMeaning(UpgradeState state) { return TableRow(state).meaning; }

std::optional<int> ExitCode(UpgradeState state) {
  if (IsInFlight(state)) return std::nullopt;
  return TableRow(state).exit_code;
}

std::vector<UpgradeState> InFlightStates() { return StatesWhere(true); }
std::vector<UpgradeState> TerminalStates() { return StatesWhere(false); }

int PipelineRank(UpgradeState state) { return IsInFlight(state) ? static_cast<int>(state) : -1; }

std::vector<std::string> StateNamesWhere(bool StateRow::*column) {
  std::vector<std::string> out;
  for (const auto& row : kTable)
    if (row.*column) out.emplace_back(row.name);
  return out;
}

std::vector<std::string> InFlightStateNames() { return StateNamesWhere(&StateRow::in_flight); }

std::vector<std::string> TerminalStateNames() {
  std::vector<std::string> out;
  for (UpgradeState state : TerminalStates()) out.emplace_back(StateName(state));
  return out;
}

UpgradeState StateForJob(JobKind kind) {
  for (const auto& row : kTable)
    if (row.job == kind) return row.state;
  throw std::logic_error("no state runs the " + std::string(JobKindName(kind)) + " job");
}

UpgradeState OnFailure(UpgradeState state, JobFailureKind kind) {
  if (kind == JobFailureKind::kNone) return state;
  return TableRow(state).on_failure[static_cast<size_t>(kind) - 1];
}

}  // namespace safe_upgrade
