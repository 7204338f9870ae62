// The rollback's WAL, proven present before the apply.
#include "checks/archive_proof.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "base/job.h"
#include "postgres/backup_files.h"
#include "postgres/pgbackrest.h"
#include "postgres/wal_archive.h"

namespace safe_upgrade {
namespace {

// The stanza's archive: `pgbackrest check` switches WAL and waits until the segment holding the
// restore point is archived, then every segment from the backup's start to the restore point
// must be listed in the repository.
nlohmann::json ProveStanzaCovers(const AgentConfig& config, const nlohmann::json& meta,
                                 const RestorePointRecord& restore_point) {
  PgBackRest pgbackrest(config);
  pgbackrest.Check(std::chrono::seconds(60));
  auto conn = ConnectProduction(config, "safe-upgrade-agent archive proof");
  uint64_t seg_size =
      std::stoull(conn->Exec("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'").Scalar());
  conn.reset();
  uint64_t from = ParseLsn(meta.value("backup_start_lsn", "0/0")) / seg_size;
  uint64_t to = ParseLsn(restore_point.lsn) / seg_size;
  auto name = [&](uint64_t n) {
    return WalSegmentName(restore_point.timeline, n * seg_size, static_cast<uint32_t>(seg_size));
  };
  PgBackRestStanza stanza = pgbackrest.Info();
  std::vector<std::string> have =
      pgbackrest.ArchivedSegments(stanza.archive_id, restore_point.timeline, name(from), name(to));
  for (uint64_t n = from; n <= to; ++n)
    if (!std::binary_search(have.begin(), have.end(), name(n)))
      throw std::runtime_error("WAL segment " + name(n) + " is not in " + pgbackrest.Describe());
  return {{"segments", have.size()},
          {"from_lsn", meta.value("backup_start_lsn", "")},
          {"to_lsn", restore_point.lsn},
          {"timeline", restore_point.timeline},
          {"archive", "pgbackrest stanza " + config.backend.stanza}};
}

}  // namespace

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
    if (config.backend.IsPgBackRest()) return ProveStanzaCovers(config, meta, restore_point);
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
