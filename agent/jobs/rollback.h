// Point-in-time rollback of production to an upgrade's restore point, journaled step by step so
// that a restarted agent resumes where it stopped. See docs/rollback.md.
//
// The rollback is one table of steps (RollbackStepTable) that one runner walks in order: each
// step is journaled ("rollback_step") once it is complete, so an agent restarted after a crash
// skips the steps journaled as done and runs the one it was in again (every step checks what
// already exists first, so running it twice is safe). Adding a step is adding a row.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "base/journal.h"

namespace safe_upgrade {

class RollbackRun;

// What a failure in a step means.
enum class RollbackStage {
  kRefusable,       // production still runs untouched: the rollback is refused, nothing to undo
  kProductionDown,  // after the stop: the original data directory is put back and started
  kFinishing,       // production runs at the restore point: the step is retried on resume
  kEnd,             // the last record, written when the rollback is over
};

struct RollbackStepDef {
  const char* name;  // the journal's and GetUpgradeJournal's word for it
  RollbackStage stage;
  void (RollbackRun::*run)();  // nullptr for the end record
  // Whether a journal that records this step as done may be resumed after it; when not, nothing
  // was stopped yet and the rollback starts over. nullptr: always.
  bool (*resumable)(const RollbackContext& journaled);
  // Why running it again after a crash inside it is safe (for the reader; the docs quote it).
  const char* rerun_safe_because;
};

// The steps, in order; the last is the end record ("done").
const std::vector<RollbackStepDef>& RollbackStepTable();
// Their names, in order.
std::vector<std::string> RollbackSteps();

// A journaled step name that is not in the table: the journal was written by another agent, or
// damaged. The rollback is not resumed from a guess.
class UnknownRollbackStep : public std::runtime_error {
 public:
  explicit UnknownRollbackStep(const std::string& step);
  const std::string& step() const { return step_; }

 private:
  std::string step_;
};

// The index in the table of the last step done by a journaled rollback (in_progress at
// journaled_step with that context), or -1 to start from the beginning. Throws UnknownRollbackStep.
int RollbackResumeAfter(const std::string& journaled_step, const RollbackContext& journaled);

}  // namespace safe_upgrade
