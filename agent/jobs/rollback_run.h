// The rollback job's state and steps, shared by the files that implement them: rollback.cpp (the
// step table and its runner), rollback_precheck.cpp (what is checked and recorded while
// production still runs), rollback_swap.cpp (the stop, the data-directory moves, the restore or
// swap, putting the original back), rollback_recovery.cpp (recovery, promotion, verification)
// rollback_standbys.cpp (replication slots and standbys brought back) and rollback_outcome.cpp
// (the outcome written into the restored catalog).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "base/job.h"
#include "base/journal.h"
#include "jobs/rollback.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "postgres/tablespaces.h"

namespace safe_upgrade {

class RollbackRun {
 public:
  explicit RollbackRun(JobContext& ctx);
  nlohmann::json Run();

  // The steps' bodies, named by the step table.
  void Precheck();
  void CheckRollbackTarget();
  void RecordWindow();
  void StopServer();
  void MoveAside();
  void RestoreSnapshot();
  void WriteRecoverySettings();
  void StartAndWaitForPromotion();
  void VerifyRestored();
  void RemoveRecoverySettings();
  void BringBackStandbys();
  void WriteRolledBackOutcome();

 private:
  // Recovery did not reach the restore point (or reached the wrong cluster).
  struct RecoveryFailed : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  // Runner (rollback.cpp).
  void RunStage(RollbackStage stage);
  void JournalStep(const std::string& step, RollbackState status = RollbackState::kInProgress);
  void ForgetRollback();
  void Finish(RollbackState status);
  nlohmann::json EndAtUnknownStep(const UnknownRollbackStep& unknown);
  std::string ProductionState() const;
  void Event(const std::string& level, const std::string& message,
             nlohmann::json detail = nlohmann::json::object());
  bool Done(void (RollbackRun::*run)()) const;
  OutsidePlan Outside() const;
  bool Fast() const { return rc_.fast; }
  // How this rollback gets to the restore point, as the report and the events name it.
  const char* PathName() const { return Fast() ? "parked target" : "snapshot restore"; }
  // <id>-<UTC time of the precheck>; only the upgrade id in journals of earlier agents.
  std::string Suffix() const { return rc_.dir_suffix.value_or(std::to_string(id_)); }
  std::string AsideDir() const { return config_.data_directory + ".failed-" + Suffix(); }
  std::string RestoringDir() const { return config_.data_directory + ".restoring-" + Suffix(); }
  std::string FailedRestoreDir() const { return config_.data_directory + ".rollback-failed-" + Suffix(); }

  // Prechecks (rollback_precheck.cpp).
  void RequireRoomToSetAside();
  void RequireDiskForRestore();
  void RequireBackupInStanza(const nlohmann::json& meta, const nlohmann::json& fail_detail);

  // Moves (rollback_swap.cpp).
  void SwapInTarget();
  nlohmann::json PutOriginalBack(const std::string& reason);
  std::string RestoreOriginal();

  // Recovery (rollback_recovery.cpp).
  std::string LastFatalLine() const;

  // Standbys (rollback_standbys.cpp).
  void RestoreReplicationSlots();
  // "" when every standby streams again, else why not, per standby.
  std::string StandbysProblem() const;

  // Outcome (rollback_outcome.cpp).
  // primary_restored: the primary runs at the restore point (a standby failed), rather than the
  // original data directory put back.
  void WriteOutcome(const std::string& state, const std::string& error, bool primary_restored = false);
  void WriteStandbyOutcomes(PgConn& conn);
  std::unique_ptr<PgConn> OutcomeConnection() const;
  void WriteFailedOutcome(const std::string& error);

  JobContext& ctx_;
  const AgentConfig& config_;
  int64_t id_;
  ServerControl server_;
  RollbackContext rc_;
  int step_ = -1;        // the index of the last step done
  std::string running_;  // the step being run, for the reason of a failure
};

// Seconds since the epoch, for the downtime.
double EpochSeconds();

}  // namespace safe_upgrade
