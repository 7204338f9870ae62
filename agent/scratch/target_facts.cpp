// What a rollback target's own files say about it.
#include "scratch/target_facts.h"

#include "base/fs_util.h"
#include "postgres/backup_files.h"
#include "postgres/cluster.h"
#include "postgres/recovery_settings.h"

namespace safe_upgrade {

using nlohmann::json;

// Read from the control file, never from the server's log, whose messages follow lc_messages.
// A clean stop in recovery: a target stopped before its restore point, or one an earlier agent
// parked with recovery_target_action = shutdown.
bool ShutDownInRecovery(const ClusterFacts& facts) { return facts.state == "shut down in recovery"; }

// Promoted at the restore point and still running as an (isolated) primary: in production on a
// timeline after the one it replayed. The copy's own control file says "in production" too, on
// the old timeline, until the server's startup has rewritten it.
bool Promoted(const ClusterFacts& facts, uint32_t replayed_timeline) {
  return facts.state == "in production" && facts.timeline > replayed_timeline;
}

// Replayed its base backup to the end (the control file forgets the backup's start then) and
// still recovering: consistent, waiting in the archive for more WAL.
bool Consistent(const ClusterFacts& facts) {
  return facts.state == "in archive recovery" && facts.backup_start_lsn == "0/0";
}

std::optional<ClusterFacts> ControlFacts(const AgentConfig& config, const std::string& dir,
                                         std::string& reason) {
  try {
    return ReadControlData(config.bin_dir, dir);
  } catch (const std::exception& e) {
    reason = std::string("pg_controldata failed: ") + e.what();
    return std::nullopt;
  }
}

// Parked exactly at the restore point: promoted there and shut down cleanly. Its control file
// says "shut down" on a new timeline, and that timeline's history file says it branched off the
// restore point's timeline at the restore point's LSN (the end of the restore point record, where
// recovery stops). A target promoted anywhere else, or never promoted, is not parked.
bool ParkedAt(const AgentConfig& config, const RollbackTargetRecord& target, const RestorePointAt& rp,
              std::string& reason, json& facts_out) {
  const std::string& data_dir = target.dir;
  if (!IsDirectory(data_dir)) {
    reason = "its directory " + data_dir + " is gone";
    return false;
  }
  auto facts = ControlFacts(config, data_dir, reason);
  if (!facts) return false;
  facts_out = {{"state", facts->state},
               {"timeline", facts->timeline},
               {"restore_point_lsn", rp.lsn},
               {"restore_point_timeline", rp.timeline}};
  if (ShutDownInRecovery(*facts)) {
    reason = "it stopped in recovery (replay ended at " + facts->min_recovery_end_lsn +
             "), so it was not promoted at restore point " + rp.name;
    return false;
  }
  if (facts->state != "shut down") {
    reason = "it stopped in state \"" + facts->state + "\", not promoted at the restore point";
    return false;
  }
  if (facts->timeline <= static_cast<uint32_t>(rp.timeline)) {
    reason = "it is on timeline " + std::to_string(facts->timeline) +
             ", not on a new timeline after restore point " + rp.name + "'s timeline " +
             std::to_string(rp.timeline);
    return false;
  }
  std::string history = TimelineHistoryFileName(facts->timeline);
  std::string text;
  try {
    text = ReadFile(JoinPath(JoinPath(data_dir, "pg_wal"), history));
  } catch (const std::exception& e) {
    reason = "its timeline history file " + history + " cannot be read: " + e.what();
    return false;
  }
  auto last = LastTimelineSwitch(text);
  if (!last) {
    reason = "its timeline history file " + history + " names no switch";
    return false;
  }
  facts_out["branched_from_timeline"] = last->parent;
  facts_out["branched_at_lsn"] = last->lsn;
  facts_out["branch_reason"] = last->reason;
  uint64_t branched_at = 0, wanted = 0;
  try {
    branched_at = ParseLsn(last->lsn);
    wanted = ParseLsn(rp.lsn);
  } catch (const std::exception& e) {
    reason = e.what();
    return false;
  }
  if (last->parent != static_cast<uint32_t>(rp.timeline) || branched_at != wanted) {
    reason = "it was promoted on timeline " + std::to_string(last->parent) + " at " + last->lsn +
             ", not at restore point " + rp.name + " (timeline " + std::to_string(rp.timeline) + ", " +
             rp.lsn + ")";
    return false;
  }
  // After the swap production archives the history file; an archive that holds another file
  // under that name would refuse it forever.
  std::optional<std::string> archived = ArchivedFileText(config, history);
  if (archived && *archived != text) {
    reason = "the WAL archive already holds a different " + history + "; a rollback must pick a new timeline";
    return false;
  }
  return true;
}

// The target ran with archive_mode off, so its promotion did not mark the new timeline's history
// file for archiving; production's archiver, once it runs on these files, will.
void MarkHistoryForArchiving(const std::string& data_dir, uint32_t timeline) {
  std::string status = JoinPath(JoinPath(data_dir, "pg_wal"), "archive_status");
  std::string name = TimelineHistoryFileName(timeline);
  if (PathExists(JoinPath(status, name + ".done")) || PathExists(JoinPath(status, name + ".ready"))) return;
  EnsureDir(status, 0700);
  AtomicWriteFile(JoinPath(status, name + ".ready"), "", 0600);
}

}  // namespace safe_upgrade
