// The rollback's moves: the stop, the data directory (and production's tablespaces and WAL
// directory) moved aside, the snapshot restored or the parked target swapped in its place, and,
// when anything fails after the stop, the original put back and started. Each checks what exists
// first, so that it runs again safely after a crash.
#include <unistd.h>

#include <chrono>

#include "base/fs_util.h"
#include "core/state_table.h"
#include "jobs/jobs.h"
#include "jobs/rollback_run.h"
#include "postgres/catalog.h"
#include "postgres/pgbackrest.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

constexpr const char* kRestoredMarker = "safe_upgrade_restored_from";

}  // namespace

double EpochSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void RollbackRun::StopServer() {
  if (!server_.Running()) return;
  if (!rc_.downtime_started) rc_.downtime_started = EpochSeconds();
  if (Fast()) {
    // Its data directory is moved aside, not reused; if it must be put back, crash recovery
    // is safe. A fast shutdown's checkpoint would be most of the downtime.
    Event("info", "stopping the server (immediate: its data directory is set aside, not reused)");
    server_.Stop("immediate", std::chrono::seconds(60));
    return;
  }
  Event("info", "stopping the server");
  try {
    server_.Stop("fast", std::chrono::seconds(60));
  } catch (const std::exception& e) {
    Event("warning", std::string("fast shutdown failed (") + e.what() + "); stopping immediately");
    server_.Stop("immediate", std::chrono::seconds(60));
  }
}

void RollbackRun::MoveAside() {
  if (server_.Running()) StopServer();  // someone started it again meanwhile
  if (PathExists(AsideDir())) {
    if (PathExists(config_.data_directory))
      throw std::runtime_error("both " + config_.data_directory + " and " + AsideDir() +
                               " exist; refusing to guess which is the original");
  } else {
    DurableRename(config_.data_directory, AsideDir());
    Event("info", "moved the data directory aside to " + AsideDir() + " (kept, not deleted)",
          {{"moved_to", AsideDir()}});
  }
  // Each part already moved before a crash is skipped.
  Outside().MoveAside(AsideDir());
  if (rc_.set_aside.size() > 1)
    Event("info", "moved production's tablespaces and WAL directory aside too (kept, not deleted)",
          {{"set_aside", ToJson(rc_.set_aside)}});
}

void RollbackRun::RestoreSnapshot() {
  if (PathExists(config_.data_directory) && PathExists(JoinPath(config_.data_directory, kRestoredMarker)))
    return;  // restored and renamed before a crash
  if (PathExists(config_.data_directory))
    throw std::runtime_error(config_.data_directory +
                             " reappeared while rolling back; refusing to overwrite it");
  if (Fast()) return SwapInTarget();
  // A partial copy from a crash is our own scratch, not a data directory anyone used.
  if (PathExists(RestoringDir())) RemoveTree(RestoringDir());
  Event("info", "restoring snapshot " + rc_.snapshot_id);
  auto started = std::chrono::steady_clock::now();
  json meta = LoadSnapshotMeta(config_, rc_.snapshot_id);
  if (IsPgBackRestSnapshot(meta)) {
    // Into a new directory, production's kept aside: a restore that fails half-way (the
    // repository unreachable) leaves the original to be put back, which --delta over it would not.
    Event("info", "restoring pgBackRest backup " + meta["pgbackrest"].value("label", "") + " of stanza \"" +
                      config_.backend.stanza + "\" into " + RestoringDir());
    RestorePgBackRestSnapshot(config_, meta, RestoringDir());
  } else {
    CopyTree(rc_.snapshot_data, RestoringDir());
  }
  Outside().PrepareRestore(RestoringDir());
  AtomicWriteFile(JoinPath(RestoringDir(), kRestoredMarker), rc_.snapshot_id + "\n");
  for (const char* f : {"standby.signal", "recovery.signal", "postmaster.pid"})
    if (PathExists(JoinPath(RestoringDir(), f))) unlink(JoinPath(RestoringDir(), f).c_str());
  // cp leaves the copy in the page cache; production must not start on it before it is on disk.
  SyncTree(RestoringDir());
  Outside().PutInPlace(RestoringDir());
  DurableRename(RestoringDir(), config_.data_directory);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Event("info", "snapshot restored and synced to disk in " + std::to_string(secs).substr(0, 5) + " s",
        {{"synced", true}, {"seconds", secs}});
}

// The parked target becomes the data directory: one rename on the same filesystem.
void RollbackRun::SwapInTarget() {
  const RollbackTargetRecord target = rc_.rollback_target.value_or(RollbackTargetRecord{});
  const std::string& dir = target.dir;
  // Synced when it was prepared; one prepared by an earlier agent was not.
  if (!target.synced) {
    SyncStats synced = SyncTree(dir);
    Event("info", "synced the parked rollback target to disk (" + std::to_string(synced.files) + " files)");
  }
  AtomicWriteFile(JoinPath(dir, kRestoredMarker), rc_.snapshot_id + " (parked target)\n");
  // Promoted: PostgreSQL removed its standby.signal; nothing must send it into recovery again.
  for (const char* f : {"postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"})
    if (PathExists(JoinPath(dir, f))) unlink(JoinPath(dir, f).c_str());
  // Its sanitized postgresql.conf was for the parked run (Debian layout: the real one is elsewhere).
  if (!config_.config_file.empty() && PathExists(JoinPath(dir, "postgresql.conf")))
    unlink(JoinPath(dir, "postgresql.conf").c_str());
  ctx_.journal().Update(id_, [](JournalDoc& doc) {
    if (doc.rollback_target) doc.rollback_target->state = TargetState::kSwapped;
  });
  Outside().PutInPlace(dir);
  DurableRename(dir, config_.data_directory);
  Event("info", "swapped the parked rollback target in as the data directory");
}

// Something failed after the stop (recovery did not reach the restore point, a copy, a rename
// or a start failed): keep whatever was put in place aside, put the original data directory
// back and start it, so the service is up, then record rollback_failed. Journaled first, so an
// agent restarted in the middle finishes this, and never runs the rollback's steps again.
json RollbackRun::PutOriginalBack(const std::string& reason) {
  ctx_.journal().Update(id_, [&](JournalDoc& doc) {
    doc.rollback_putting_back = reason;
    doc.rollback_context = rc_;
  });
  Event("error", reason + "; putting the original data directory back");
  std::string failed_restore;
  try {
    failed_restore = RestoreOriginal();
  } catch (const std::exception& e) {
    // Nothing more the agent can do safely; saying where everything is beats retrying forever.
    std::string message = reason + "; putting the original data directory back also failed: " + e.what() +
                          ". The server is down: the original data is in " +
                          (PathExists(AsideDir()) ? AsideDir() : config_.data_directory) +
                          "; move it back to " + config_.data_directory + " if needed and start the server";
    ctx_.Event("rolling_back", "error", message);
    Finish(RollbackState::kRollbackFailed);
    throw JobFailure(message, {{"state", "rollback_failed"}, {"stage", "put_back"}});
  }
  Event("info",
        "the original data directory is running again" +
            (failed_restore.empty() ? std::string() : "; the failed restore is kept in " + failed_restore),
        {{"failed_restore", failed_restore}});
  rc_.failed_restore = failed_restore;
  WriteOutcome(std::string(StateName(UpgradeState::kRollbackFailed)), reason);
  Finish(RollbackState::kRollbackFailed);
  // The target's scratch and journal entry go (a swapped-in target is production now).
  ReleaseRollbackTarget(ctx_, "rolling_back", "the rollback is over");
  throw JobFailure(reason, {{"state", StateName(UpgradeState::kRollbackFailed)}, {"stage", "recovery"}});
}

// Returns where the failed restore was set aside ("" when none was in place).
std::string RollbackRun::RestoreOriginal() {
  // Ours once the move-aside step ran (or began: the original gone from its place); before
  // that a directory under that name would be someone else's, and the original never moved.
  bool original_aside =
      PathExists(AsideDir()) && (Done(&RollbackRun::MoveAside) || !PathExists(config_.data_directory));
  std::string failed_restore;
  if (original_aside) {
    if (server_.Running()) server_.Stop("immediate", std::chrono::seconds(60));
    if (PathExists(config_.data_directory)) {
      if (PathExists(FailedRestoreDir()))
        throw std::runtime_error("both " + config_.data_directory + " and " + FailedRestoreDir() + " exist");
      DurableRename(config_.data_directory, FailedRestoreDir());
      failed_restore = FailedRestoreDir();
    }
    // Production's tablespaces and WAL directory first: once the data directory is back, all is.
    for (const auto& path : Outside().PutOriginalBack(AsideDir(), FailedRestoreDir()))
      Event("info", "the restored copy's " + path + " is kept aside", {{"failed_restore", path}});
    // Our recovery settings were only ever written into the restored copy.
    DurableRename(AsideDir(), config_.data_directory);
  } else if (PathExists(FailedRestoreDir())) {
    failed_restore = FailedRestoreDir();  // set aside before a restart
  }
  // A copy that never became the data directory is this rollback's scratch.
  if (PathExists(RestoringDir())) RemoveTree(RestoringDir());
  ctx_.Failpoint("rollback:after:original_back");
  if (!server_.Running()) server_.Start({}, std::chrono::seconds(config_.job_timeout_s));
  return failed_restore;
}

}  // namespace safe_upgrade
