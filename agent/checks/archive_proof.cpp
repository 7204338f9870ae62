// The rollback's WAL, proven present before the apply.
#include "checks/archive_proof.h"

#include <string>

#include "base/job.h"
#include "postgres/backup_files.h"
#include "postgres/wal_archive.h"

namespace safe_upgrade {

nlohmann::json ProveRollbackWal(const AgentConfig& config, int64_t upgrade_id,
                                const RestorePointRecord& restore_point) {
  const std::string sid = std::to_string(upgrade_id);
  nlohmann::json refused = {{"refused", true}, {"stage", "archive_proof"}};
  nlohmann::json meta;
  try {
    meta = LoadSnapshotMeta(config, SnapshotIdFor(upgrade_id));
  } catch (const std::exception& e) {
    throw JobFailure("upgrade " + sid + " cannot roll back without its snapshot (" + e.what() +
                         "); production is not touched",
                     refused);
  }
  int snapshot_timeline = meta.value("timeline", 0);
  if (snapshot_timeline != restore_point.timeline)
    throw JobFailure("the snapshot of upgrade " + sid + " is on timeline " +
                         std::to_string(snapshot_timeline) + " but its restore point " + restore_point.name +
                         " is on timeline " + std::to_string(restore_point.timeline) +
                         ", so recovery could not reach it; production is not touched",
                     refused);
  uint64_t from = ParseLsn(meta.value("backup_start_lsn", "0/0"));
  uint64_t to = ParseLsn(restore_point.lsn);
  uint64_t system_identifier = std::stoull(meta.value("system_identifier", "0"));
  try {
    size_t segments = ProveWalArchiveCovers(config, system_identifier, restore_point.timeline, from, to);
    return {{"segments", segments},
            {"from_lsn", meta.value("backup_start_lsn", "")},
            {"to_lsn", restore_point.lsn},
            {"timeline", restore_point.timeline}};
  } catch (const JobFailure&) {
    throw;
  } catch (const std::exception& e) {
    throw JobFailure(std::string("a rollback of upgrade ") + sid + " could not replay its WAL: " + e.what() +
                         "; production is not touched",
                     refused);
  }
}

}  // namespace safe_upgrade
