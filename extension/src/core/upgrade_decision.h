// The scheduler's policy, pure: from an upgrade's facts and what its agent job did, the next state,
// its error, the events and report keys to write. The worker (extension/src/pg/upgrade_*.cpp) reads
// the facts, asks these functions and executes the Decision through SPI; the state table
// (state_table.h) gives the states' targets, this file the messages and the options' say.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/job_kinds.h"
#include "core/state_table.h"

namespace safe_upgrade {

// An upgrade row as the scheduler reads it (FOR UPDATE) at the start of a step.
struct UpgradeFacts {
  int64_t id = 0;
  UpgradeState state = UpgradeState::kQueued;
  std::string extname, from_version, to_version;
  nlohmann::json options = nlohmann::json::object();
  nlohmann::json report = nlohmann::json::object();
  nlohmann::json snapshot = nlohmann::json::object();
  bool not_before_reached = true;
  bool approved = false;
  bool cancel_requested = false;
  bool has_restore_point = false;
  std::optional<std::string> agent_job;  // the job the state follows, once started
  int64_t cursor = 0;                    // how far the job's events were copied
  double seconds_in_state = 0;
};

// options.<key> as a boolean (true, "true", "on"); fallback when absent or of another type.
bool OptionBool(const nlohmann::json& options, const char* key, bool fallback);

struct NewEvent {
  std::string phase, level, message;
  nlohmann::json detail = nlohmann::json::object();
};

// What one step does, executed in this order: report keys merged, the verification retry time
// set, the job's result stored, events added, the apply resolved, the job forgotten, the state
// changed.
struct Decision {
  std::vector<std::pair<std::string, nlohmann::json>> report;
  std::optional<int> verify_retry_in_s;   // report.verify_retry_at = now + this
  bool store_snapshot = false;            // the job's result becomes upgrades.snapshot
  bool store_dependencies_after = false;  // result.databases[].dependency_after, phase "after"
  std::vector<NewEvent> events;
  // Decide the apply from the installed versions (ResolveApply), with this reason.
  std::optional<std::string> resolve_apply;
  bool forget_job = false;  // the state stays; its next step starts a new job
  std::optional<UpgradeState> next;
  std::optional<std::string> error;  // the transition's error (kept when absent)

  bool Empty() const;
};

// The event a transition writes.
NewEvent TransitionEvent(UpgradeState from, UpgradeState to, const std::optional<std::string>& error);

// Seconds before verification runs again after it could not run (not a failed check): 5 s,
// doubling, at most a minute.
int VerifyRetryDelaySeconds(int attempts);

// The state's job succeeded with this result.
Decision OnJobSucceeded(const UpgradeFacts& u, const nlohmann::json& result);
// The state's job failed this way.
Decision OnJobFailed(const UpgradeFacts& u, JobFailureKind kind, const std::string& error,
                     const nlohmann::json& result);
// The agent no longer knows the state's job (it restarted).
Decision OnJobLost(const UpgradeFacts& u);
// The agent did not answer about the state's job.
Decision OnAgentSilent(const UpgradeFacts& u, const std::string& message, int unreachable_timeout_s);

struct StartError {
  bool busy = false;     // another job runs: try again at the next pass
  bool refused = false;  // the agent will not run it
  std::string message;
};
// The agent did not start the job.
Decision OnJobNotStarted(const UpgradeFacts& u, JobKind kind, const StartError& err,
                         const std::string& address, int unreachable_timeout_s);

// The apply's outcome from the extension's version in each database (versions), or why they
// cannot be read yet (unreadable). journal_apply: the agent journal's apply record.
Decision ResolveApply(const UpgradeFacts& u, const std::string& journal_apply,
                      const std::map<std::string, std::string>& versions,
                      const std::optional<std::string>& unreadable, const std::string& why);

enum class StepAction {
  kNone,           // nothing to do in this pass
  kDecision,       // execute the plan's decision
  kScheduledStep,  // the scheduled state's steps: rollback target, restore point, its archived WAL
  kStartJob,       // start the state's job
  kFollowJob,      // follow the state's job
};
struct StepPlan {
  StepAction action = StepAction::kNone;
  Decision decision;
};
// The step of an in-flight upgrade whose agent journal (for states that may roll back) shows no
// rollback. now_epoch: the database's clock.
StepPlan DecideStep(const UpgradeFacts& u, const std::string& journal_apply, double now_epoch);

// One database's part of a finished job's result (result.databases[]), as the state's job
// recorded it: the report key, the outcome, and the error when it did not pass.
struct DatabaseOutcome {
  std::string datname, phase, outcome;
  nlohmann::json part;
  std::optional<std::string> error;
};
std::vector<DatabaseOutcome> DatabaseOutcomes(const UpgradeFacts& u, const nlohmann::json& result);

}  // namespace safe_upgrade
