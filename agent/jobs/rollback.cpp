// Rollback job: check everything it needs while production still runs, record the data-loss
// window, stop the server, move the data directory aside, put a copy at the restore point in its
// place, recover, verify, clean the recovery settings and write the outcome into the restored
// catalog. If anything fails after the stop, the original data directory is put back and
// started, so production is never left down by a rollback. Nothing is ever deleted.
//
// This file holds the step table and the runner that walks it; the steps' bodies are in
// rollback_precheck.cpp, rollback_swap.cpp, rollback_recovery.cpp and rollback_outcome.cpp.
#include "jobs/rollback.h"

#include <algorithm>

#include "base/fs_util.h"
#include "core/state_table.h"
#include "jobs/jobs.h"
#include "jobs/rollback_run.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

// Journaled by an agent that recorded the window before checking the target: nothing was
// stopped yet, so the rollback starts over.
bool WindowAfterTargetCheck(const RollbackContext& rc) { return rc.dir_suffix.has_value(); }

}  // namespace

const std::vector<RollbackStepDef>& RollbackStepTable() {
  using S = RollbackStage;
  using R = RollbackRun;
  static const std::vector<RollbackStepDef> steps = {
      // Production still runs, untouched: any failure here refuses the rollback.
      {"prechecked", S::kRefusable, &R::Precheck, nullptr,
       "it only reads, and chooses the directory names again"},
      {"target_checked", S::kRefusable, &R::CheckRollbackTarget, nullptr,
       "parking a target already parked finds it parked; a discarded one falls back to the snapshot"},
      // Right before the stop, after the wait for the target: writes accepted until here are lost.
      {"window_recorded", S::kRefusable, &R::RecordWindow, &WindowAfterTargetCheck,
       "it only reads production, which still runs"},
      // From the stop on, any failure puts the original data directory back and starts it.
      {"stopped", S::kProductionDown, &R::StopServer, nullptr, "a stopped server is not stopped again"},
      {"moved_aside", S::kProductionDown, &R::MoveAside, nullptr,
       "each directory already moved aside is skipped; both names present is refused"},
      {"restored", S::kProductionDown, &R::RestoreSnapshot, nullptr,
       "a data directory marked restored is kept; a partial copy is scratch and made again"},
      {"configured", S::kProductionDown, &R::WriteRecoverySettings, nullptr,
       "the recovery settings are rewritten whole"},
      {"promoted", S::kProductionDown, &R::StartAndWaitForPromotion, nullptr,
       "a running server is not started again; promotion is waited for"},
      {"verified", S::kProductionDown, &R::VerifyRestored, nullptr, "it only reads"},
      // Production runs at the restore point now; these retry safely if the agent restarts.
      {"settings_removed", S::kFinishing, &R::RemoveRecoverySettings, nullptr,
       "ALTER SYSTEM RESET is idempotent"},
      {"standbys_resynced", S::kFinishing, &R::BringBackStandbys, nullptr,
       "a slot that exists is kept, and a standby that streams on the new timeline is left alone"},
      {"outcome_written", S::kFinishing, &R::WriteRolledBackOutcome, nullptr,
       "its inserts skip rows already there, in one transaction"},
      {"done", S::kEnd, nullptr, nullptr, "it is the end record"},
  };
  return steps;
}

std::vector<std::string> RollbackSteps() {
  std::vector<std::string> names;
  for (const auto& step : RollbackStepTable()) names.push_back(step.name);
  return names;
}

UnknownRollbackStep::UnknownRollbackStep(const std::string& step)
    : std::runtime_error("the journal names rollback step \"" + step +
                         "\", which is not one of this agent's rollback steps"),
      step_(step) {}

int RollbackResumeAfter(const std::string& journaled_step, const RollbackContext& journaled) {
  if (journaled_step.empty()) return -1;  // in progress, no step done yet
  const auto& steps = RollbackStepTable();
  for (size_t i = 0; i < steps.size(); ++i) {
    if (journaled_step != steps[i].name) continue;
    if (steps[i].resumable && !steps[i].resumable(journaled)) return -1;
    return static_cast<int>(i);
  }
  throw UnknownRollbackStep(journaled_step);
}

RollbackRun::RollbackRun(JobContext& ctx)
    : ctx_(ctx),
      config_(ctx.config()),
      id_(ctx.upgrade_id()),
      server_(config_.bin_dir, config_.data_directory, config_.control, "", config_.server_log) {}

nlohmann::json RollbackRun::Run() {
  JournalDoc doc = ctx_.journal().Load(id_);
  if (doc.rollback == RollbackState::kRolledBack || doc.rollback == RollbackState::kRollbackFailed)
    throw JobFailure(
        "upgrade " + std::to_string(id_) + " was already rolled back (" + ToString(doc.rollback) + ")",
        {{"stage", "precheck"}}, JobFailureKind::kRefused);
  if (doc.rollback_context) rc_ = *doc.rollback_context;
  try {
    step_ = doc.rollback == RollbackState::kInProgress ? RollbackResumeAfter(doc.rollback_step, rc_) : -1;
  } catch (const UnknownRollbackStep& unknown) {
    return EndAtUnknownStep(unknown);
  }
  if (step_ >= 0)
    ctx_.Info("rolling_back",
              std::string("resuming the rollback after step ") + RollbackStepTable()[step_].name);
  // Interrupted while putting the original back: finish that, never the rollback's steps.
  if (doc.rollback_putting_back) return PutOriginalBack(*doc.rollback_putting_back);

  try {
    RunStage(RollbackStage::kRefusable);
  } catch (const JobFailure& f) {
    ForgetRollback();
    throw JobFailure(f.what(), f.detail(), JobFailureKind::kRefused);
  } catch (const std::exception& e) {
    ForgetRollback();
    throw JobFailure(std::string("cannot roll back: ") + e.what() + "; production was not touched",
                     {{"stage", "precheck"}}, JobFailureKind::kRefused);
  }
  try {
    RunStage(RollbackStage::kProductionDown);
  } catch (const RecoveryFailed& e) {
    return PutOriginalBack(e.what());
  } catch (const std::exception& e) {
    return PutOriginalBack("rollback step \"" + running_ + "\" failed: " + e.what());
  }
  RunStage(RollbackStage::kFinishing);
  Finish(RollbackState::kRolledBack);
  // The target's scratch and journal entry go (a swapped-in target is production now).
  ReleaseRollbackTarget(ctx_, "rolling_back", "the rollback is over");
  // The primary is at the restore point; the upgrade is rolled back only if its standbys follow.
  std::string standbys_problem = StandbysProblem();
  nlohmann::json result = {
      {"state", standbys_problem.empty() ? "rolled_back" : "rollback_failed"},
      {"data_loss_window", rc_.window ? ToJson(*rc_.window) : nlohmann::json()},
      {"path", PathName()},
      {"downtime_s", rc_.downtime_s.value_or(-1.0)},
      {"standbys", rc_.standbys}};
  if (!standbys_problem.empty()) result["error"] = standbys_problem;
  return result;
}

void RollbackRun::RunStage(RollbackStage stage) {
  const auto& steps = RollbackStepTable();
  for (int index = 0; index < static_cast<int>(steps.size()); ++index) {
    const RollbackStepDef& step = steps[index];
    if (step.stage != stage || step_ >= index) continue;
    running_ = step.name;
    (this->*step.run)();
    JournalStep(step.name);
    step_ = index;
    ctx_.Failpoint(std::string("rollback:after:") + step.name);
  }
}

bool RollbackRun::Done(void (RollbackRun::*run)()) const {
  const auto& steps = RollbackStepTable();
  for (int index = 0; index < static_cast<int>(steps.size()); ++index)
    if (steps[index].run == run) return step_ >= index;
  return false;
}

void RollbackRun::JournalStep(const std::string& step, RollbackState status) {
  ctx_.journal().Update(id_, [&](JournalDoc& doc) {
    doc.rollback = status;
    doc.rollback_step = step;
    doc.rollback_context = rc_;
  });
}

// A refused rollback leaves no trace that the next agent start would resume.
void RollbackRun::ForgetRollback() {
  ctx_.journal().Update(id_, [](JournalDoc& doc) {
    doc.rollback = RollbackState::kNone;
    doc.rollback_step.clear();
    doc.rollback_context.reset();
  });
}

void RollbackRun::Finish(RollbackState status) {
  ctx_.journal().Update(id_, [&](JournalDoc& doc) {
    doc.rollback = status;
    doc.rollback_step = RollbackStepTable().back().name;
    doc.rollback_context = rc_;
    doc.rollback_putting_back.reset();
  });
}

void RollbackRun::Event(const std::string& level, const std::string& message, nlohmann::json detail) {
  ctx_.Event("rolling_back", level, message, detail);
  rc_.events.push_back({NowIso8601(), "rolling_back", level, message, detail});
}

OutsidePlan RollbackRun::Outside() const { return OutsidePlan::FromJson(rc_.outside); }

// Where production is, from what is on disk, for a person to act on.
std::string RollbackRun::ProductionState() const {
  bool running = false;
  try {
    running = server_.Running();
  } catch (...) {
  }
  std::string out = "the server is " + std::string(running ? "running" : "not running") +
                    ", the data directory " + config_.data_directory +
                    (PathExists(config_.data_directory) ? " is in place" : " is missing");
  if (PathExists(AsideDir()))
    out += ", and " + AsideDir() + " (the original data directory, moved aside) exists";
  return out;
}

// Never a guess: the rollback ends rollback_failed, saying where production is.
nlohmann::json RollbackRun::EndAtUnknownStep(const UnknownRollbackStep& unknown) {
  std::string known;
  for (const auto& step : RollbackStepTable()) known += (known.empty() ? "" : ", ") + std::string(step.name);
  std::string message = "cannot resume the rollback of upgrade " + std::to_string(id_) + ": " +
                        unknown.what() + " (" + known + "); " + ProductionState() +
                        ". Nothing was changed; check the data directory and start the server if it is down";
  ctx_.Event("rolling_back", "error", message);
  // The step the journal names stays, for whoever looks at it.
  ctx_.journal().Update(id_, [](JournalDoc& doc) { doc.rollback = RollbackState::kRollbackFailed; });
  WriteFailedOutcome(message);
  throw JobFailure(message, {{"state", StateName(UpgradeState::kRollbackFailed)}, {"stage", "resume"}});
}

nlohmann::json RunRollbackJob(JobContext& ctx) { return RollbackRun(ctx).Run(); }

}  // namespace safe_upgrade
