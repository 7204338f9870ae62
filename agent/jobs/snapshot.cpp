// The snapshot job: a verified base backup of the cluster the agent serves, taken for one upgrade
// into <snapshot_dir>/snap-<id>/data, with snapshot.json describing it. Dry runs clone it and a
// rollback restores it, so nothing is published under that name until it has been verified.
// How it is taken and verified depends on agent.snapshot_method (snapshot_methods.h): this file
// checks the cluster and the disk, picks the method, then records and publishes the result.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <regex>
#include <sstream>

#include "base/fs_util.h"
#include "base/process.h"
#include "core/state_table.h"
#include "jobs/jobs.h"
#include "postgres/backup_files.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/tablespaces.h"
#include "postgres/wal_archive.h"
#include "snapshots/retention.h"
#include "snapshots/snapshot_methods.h"
#include "storage/reflink.h"

namespace fs = std::filesystem;

namespace safe_upgrade {

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// The directory PostgreSQL keeps inside each tablespace location (TABLESPACE_VERSION_DIRECTORY).
const char* const kTablespaceVersionDirSql =
    "SELECT 'PG_' || current_setting('server_version_num')::int / 10000 || '_' || catalog_version_no "
    "FROM pg_control_system()";

uint64_t ClusterBytes(PgConn& conn) {
  return std::stoull(conn.Exec("SELECT sum(pg_database_size(oid))::bigint::text FROM pg_database").Scalar());
}

uint64_t MbToBytes(uint64_t mb) {
  return mb > std::numeric_limits<uint64_t>::max() / kMiB ? std::numeric_limits<uint64_t>::max() : mb * kMiB;
}

// Refuses before anything is copied when the snapshot would eat into the reserve. A basebackup
// snapshot, its tablespaces included, lands whole in snapshot_dir (pg_database_size counts every
// tablespace of a database); a reflink one needs only its WAL and the filesystem's metadata.
void CheckFreeSpace(JobContext& ctx, PgConn& conn, const std::string& snapshot_id,
                    const std::string& method) {
  const AgentConfig& config = ctx.config();
  uint64_t cluster_bytes = ClusterBytes(conn);
  uint64_t segment_bytes =
      std::stoull(conn.Exec("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'").Scalar());
  uint64_t extra_bytes = SnapshotExtraBytes(method, cluster_bytes, segment_bytes);
  uint64_t reserve_bytes = MbToBytes(config.disk_reserve_mb);
  uint64_t free_bytes = FreeBytes(config.snapshot_dir);
  uint64_t needed = extra_bytes > std::numeric_limits<uint64_t>::max() - reserve_bytes
                        ? std::numeric_limits<uint64_t>::max()
                        : extra_bytes + reserve_bytes;
  nlohmann::json detail = {{"snapshot_dir", config.snapshot_dir}, {"free_bytes", free_bytes},
                           {"cluster_bytes", cluster_bytes},      {"extra_bytes", extra_bytes},
                           {"reserve_bytes", reserve_bytes},      {"method", method}};
  auto mb = [](uint64_t bytes) { return std::to_string((bytes + kMiB - 1) / kMiB); };
  std::string need = method == "reflink" ? "a reflink snapshot of the " + mb(cluster_bytes) +
                                               " MB cluster needs " + mb(extra_bytes) + " MB"
                                         : "the cluster is " + mb(cluster_bytes) + " MB";
  if (free_bytes < needed) {
    detail["hint"] =
        "Free space in the snapshot directory, or lower agent.disk_reserve_mb in the agent's configuration.";
    throw JobFailure("not enough free space for snapshot " + snapshot_id + " in \"" + config.snapshot_dir +
                         "\": " + std::to_string(free_bytes / kMiB) + " MB free, but " + need + " and " +
                         std::to_string(config.disk_reserve_mb) +
                         " MB must remain free (agent.disk_reserve_mb)",
                     detail);
  }
  ctx.Info("snapshot",
           "free space checked: " + std::to_string(free_bytes / kMiB) + " MB free, cluster " +
               mb(cluster_bytes) + " MB, needed " + mb(extra_bytes) + " MB (" + method + "), reserve " +
               std::to_string(config.disk_reserve_mb) + " MB",
           detail);
}

// The control database's extensions and their versions once the backup is taken.
nlohmann::json ExtensionVersions(const AgentConfig& config) {
  nlohmann::json extensions = nlohmann::json::object();
  auto conn = ConnectProduction(config, "safe-upgrade-agent snapshot");
  for (const auto& row : conn->Exec("SELECT extname::text, extversion FROM pg_extension ORDER BY 1").rows)
    extensions[row[0].value_or("")] = row[1].value_or("");
  return extensions;
}

// Our own scratch copies from an interrupted run of this job: never a published snapshot.
void RemoveLeftovers(JobContext& ctx, const std::string& dir) {
  for (const char* name : {"data.partial", "data.superseded", "snapshot.superseded.json",
                           "tablespaces.partial", "tablespaces.superseded"}) {
    std::string path = JoinPath(dir, name);
    if (!PathExists(path)) continue;
    ctx.Info("snapshot", "removing " + path + ", left by an interrupted snapshot");
    RemoveTree(path);
  }
}

// Publishes the verified backup as the snapshot. A snapshot of this upgrade taken earlier is
// unpublished (its metadata first, so no moment pairs old metadata with new data) and removed
// only once the new one is in place. The tablespaces move with the data, and the data's links
// follow them to <snapshot>/tablespaces/<oid>.
void Publish(const std::string& dir, const std::string& partial, const std::string& data_dir,
             const std::string& meta_path, const nlohmann::json& meta, const ExternalLayout& layout) {
  std::string old_meta = JoinPath(dir, "snapshot.superseded.json");
  std::string old_data = JoinPath(dir, "data.superseded");
  std::string tablespaces = JoinPath(dir, "tablespaces"),
              old_tablespaces = JoinPath(dir, "tablespaces.superseded");
  if (PathExists(meta_path)) DurableRename(meta_path, old_meta);
  if (PathExists(data_dir)) DurableRename(data_dir, old_data);
  if (PathExists(tablespaces)) DurableRename(tablespaces, old_tablespaces);
  if (!layout.tablespaces.empty()) DurableRename(JoinPath(dir, "tablespaces.partial"), tablespaces);
  for (const auto& ts : layout.tablespaces)
    PointTablespaceLink(partial, ts.oid, JoinPath(tablespaces, ts.oid));
  DurableRename(partial, data_dir);
  AtomicWriteFile(meta_path, meta.dump(2) + "\n", 0600);
  for (const auto& old : {old_data, old_tablespaces, old_meta})
    if (PathExists(old)) RemoveTree(old);
}

void RunRetention(JobContext& ctx, const std::string& snapshot_id) {
  const AgentConfig& config = ctx.config();
  try {
    auto conn = ConnectProduction(config, "safe-upgrade-agent retention");
    auto outcome = ApplySnapshotRetention(config, InFlightUpgradeIds(*conn), snapshot_id);
    for (const auto& id : outcome.removed)
      ctx.Info("retention", "removed snapshot " + id + " (agent.snapshot_retention = " +
                                std::to_string(config.snapshot_retention) + ")");
    if (!outcome.kept_in_flight.empty()) {
      std::string ids;
      for (const auto& id : outcome.kept_in_flight) ids += (ids.empty() ? "" : ", ") + id;
      ctx.Info("retention",
               "kept snapshots of in-flight upgrades that retention would otherwise remove: " + ids);
    }
    // The stanza's archive is pgBackRest's to expire (its repo retention settings), not ours.
    if (config.backend.IsPgBackRest()) return;
    if (auto needed_from = WalNeededFrom(config)) {
      auto pruned = PruneWalArchive(config, *needed_from);
      if (pruned.files > 0)
        ctx.Info("retention",
                 "removed " + std::to_string(pruned.files) + " archived WAL file(s) (" +
                     std::to_string(pruned.bytes / (1024 * 1024)) +
                     " MB) that no kept snapshot needs; the archive "
                     "keeps WAL from segment position " +
                     pruned.kept_from,
                 {{"removed_files", pruned.files},
                  {"removed_bytes", pruned.bytes},
                  {"kept_from", pruned.kept_from}});
    }
  } catch (const std::exception& e) {
    // The snapshot itself is good; a retention problem must not fail the upgrade.
    ctx.Event("retention", "warning", std::string("snapshot retention skipped: ") + e.what());
  }
}

// backend.kind = "pgbackrest": the snapshot is a backup of the stanza; snapshot_dir keeps only
// its snapshot.json. Tablespaces and a linked pg_wal are refused for now: a restore from the
// stanza would put them back in production's own locations.
nlohmann::json TakeAndRecordPgBackRestSnapshot(JobContext& ctx, const UpgradeRecord& upgrade,
                                               uint64_t served_sysid, const ExternalLayout& layout) {
  const AgentConfig& config = ctx.config();
  const std::string snapshot_id = SnapshotIdFor(ctx.upgrade_id());
  const std::string dir = SnapshotDir(config, snapshot_id);
  if (!layout.tablespaces.empty() || !layout.wal_dir.empty())
    throw JobFailure(
        "cannot snapshot this cluster with the pgbackrest backend: it has " +
            std::string(layout.tablespaces.empty() ? "a linked pg_wal" : "tablespaces") +
            ", which this version restores only with the local backend",
        {{"layout", layout.ToJson()},
         {"hint", "Use backend.kind = \"local\" for this cluster; production was not touched."}});
  ctx.Info("snapshot", "taking snapshot " + snapshot_id + " as a pgBackRest backup of stanza \"" +
                           config.backend.stanza + "\" before upgrading " + upgrade.extname + " " +
                           upgrade.from_version + " -> " + upgrade.to_version);
  auto started = std::chrono::steady_clock::now();
  PgBackRestTaken taken = TakePgBackRestSnapshot(ctx, served_sysid);
  const PgBackRestBackup& b = taken.backup;
  nlohmann::json extensions = ExtensionVersions(config);
  double duration_s = SecondsSince(started);
  nlohmann::json meta = {
      {"snapshot_id", snapshot_id},
      {"upgrade_id", ctx.upgrade_id()},
      {"system_identifier", std::to_string(served_sysid)},
      {"timeline", b.timeline},
      {"backup_start_lsn", b.start_lsn},
      {"backup_stop_lsn", b.stop_lsn},
      {"size_bytes", b.size_bytes},
      {"disk_used_bytes", 0},
      {"duration_s", Round1(duration_s)},
      {"extensions", extensions},
      {"layout", layout.ToJson()},
      {"created_at", NowIso8601()},
      {"method", "pgbackrest"},
      {"method_reason", "backend.kind = \"pgbackrest\""},
      {"pgbackrest",
       {{"stanza", config.backend.stanza},
        {"label", b.label},
        {"type", b.type},
        {"prior", b.prior},
        {"repo_delta_bytes", b.repo_delta_bytes},
        {"backup_s", Round1(taken.backup_s)}}},
      {"verification", {{"method", "pgbackrest verify"}, {"seconds", Round1(taken.verify_s)}}},
      {"verified", true}};
  EnsureDir(dir, 0700);
  RemoveLeftovers(ctx, dir);
  for (const char* name : {"data", "tablespaces"})
    if (PathExists(JoinPath(dir, name))) RemoveTree(JoinPath(dir, name));
  AtomicWriteFile(SnapshotMetaPath(config, snapshot_id), meta.dump(2) + "\n", 0600);
  ctx.journal().Update(ctx.upgrade_id(), [&](JournalDoc& doc) { doc.snapshot_id = snapshot_id; });
  ctx.Info("snapshot",
           "snapshot " + snapshot_id + " verified: pgBackRest backup " + b.label + " (" + b.type + ", " +
               std::to_string(b.repo_delta_bytes / kMiB) + " MB new in the repository), " + b.start_lsn +
               " to " + b.stop_lsn + " on timeline " + std::to_string(b.timeline),
           {{"duration_s", Round1(duration_s)},
            {"method", "pgbackrest"},
            {"verification", "pgbackrest verify"},
            {"label", b.label},
            {"type", b.type},
            {"disk_used_bytes", 0}});
  RunRetention(ctx, snapshot_id);
  return meta;
}

}  // namespace

nlohmann::json RunSnapshotJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t upgrade_id = ctx.upgrade_id();
  const std::string snapshot_id = SnapshotIdFor(upgrade_id);
  const std::string dir = SnapshotDir(config, snapshot_id);
  const std::string partial = JoinPath(dir, "data.partial");
  const std::string data_dir = SnapshotDataDir(config, snapshot_id);
  const std::string meta_path = SnapshotMetaPath(config, snapshot_id);

  auto conn = ConnectProduction(config, "safe-upgrade-agent snapshot");
  UpgradeRecord upgrade;
  try {
    upgrade = LoadUpgrade(*conn, upgrade_id);
  } catch (const PgError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw JobFailure(e.what());
  }
  // Once past snapshotting, a restore point may exist that must lie after this snapshot's backup;
  // retaking it then would make that restore point unreachable.
  auto state = ParseState(upgrade.state);
  if (!state || !IsInFlight(*state) || PipelineRank(*state) > PipelineRank(StateForJob(JobKind::kSnapshot)))
    throw JobFailure("upgrade " + std::to_string(upgrade_id) + " is " + upgrade.state +
                         "; a snapshot is taken only while an upgrade is queued or snapshotting",
                     {{"state", upgrade.state}});

  // pg_basebackup reaches the server through the socket and port; it must be the cluster whose
  // data directory we serve, or a rollback would restore someone else's data.
  uint64_t served_sysid = ReadControlData(config.bin_dir, config.data_directory).system_identifier;
  std::string server_sysid = conn->Exec("SELECT system_identifier::text FROM pg_control_system()").Scalar();
  if (server_sysid != std::to_string(served_sysid))
    throw JobFailure("the server on port " + std::to_string(config.port) + " (system identifier " +
                     server_sysid + ") is not the cluster in \"" + config.data_directory +
                     "\" (system identifier " + std::to_string(served_sysid) + ")");

  // Tablespaces and a linked pg_wal: what a rollback will have to set aside and restore, checked
  // before anything is copied.
  ExternalLayout layout =
      ReadExternalLayout(config.data_directory, conn->Exec(kTablespaceVersionDirSql).Scalar());
  if (std::string refusal = LayoutRefusal(layout, config.data_directory); !refusal.empty())
    throw JobFailure("cannot snapshot this cluster for a rollback: " + refusal,
                     {{"layout", layout.ToJson()},
                      {"hint",
                       "Give the agent's OS user write access there, or move the directory; production "
                       "was not touched."}});
  if (config.backend.IsPgBackRest())
    return TakeAndRecordPgBackRestSnapshot(ctx, upgrade, served_sysid, layout);
  ctx.Info("snapshot",
           "taking snapshot " + snapshot_id + " before upgrading " + upgrade.extname + " " +
               upgrade.from_version + " -> " + upgrade.to_version,
           {{"layout", layout.ToJson()}});
  // The method, before anything is copied: "reflink" that cannot be had fails here.
  SnapshotMethodChoice choice = ChooseSnapshotMethod(config);
  if (!choice.possible)
    throw JobFailure(
        "cannot take a reflink snapshot: " + choice.reason,
        {{"snapshot_method", choice.ToJson()},
         {"hint",
          "Put the data directory, snapshot_dir, work_dir, the tablespaces and pg_wal on one XFS "
          "(reflink=1) or btrfs filesystem, or set agent.snapshot_method to \"auto\" or "
          "\"basebackup\"; production was not touched."}});
  ctx.Info("snapshot", "snapshot method: " + choice.method + " (" + choice.reason + ")",
           {{"snapshot_method", choice.ToJson()}});
  if (IsDirectory(dir)) RemoveLeftovers(ctx, dir);
  CheckFreeSpace(ctx, *conn, snapshot_id, choice.method);
  conn.reset();  // idle for the whole copy otherwise
  EnsureDir(dir, 0700);

  auto started = std::chrono::steady_clock::now();
  uint64_t free_before = FreeBytes(config.snapshot_dir);
  SnapshotTarget target{snapshot_id, dir, partial, JoinPath(dir, "tablespaces.partial"), served_sysid};
  BackupTaken taken = choice.method == "reflink" ? TakeReflinkSnapshot(ctx, target, layout)
                                                 : TakeBasebackup(ctx, target, layout);

  // --- facts ---
  ClusterFacts backup_facts = ReadControlData(config.bin_dir, partial);
  if (backup_facts.system_identifier != served_sysid)
    throw JobFailure("the backup's system identifier " + std::to_string(backup_facts.system_identifier) +
                     " differs from the cluster's " + std::to_string(served_sysid));
  nlohmann::json extensions = ExtensionVersions(config);
  uint64_t size_bytes = TreeSize(partial);
  for (auto& ts : layout.tablespaces) {
    std::string copy = JoinPath(target.tablespaces_partial, ts.oid);
    if (!IsDirectory(JoinPath(copy, layout.version_dir)))
      throw JobFailure("the backup of tablespace " + ts.oid + " (" + ts.location + ") has no " +
                       layout.version_dir + " in " + copy);
    ts.size_bytes = TreeSize(copy);
    size_bytes += ts.size_bytes;
  }
  // The disk the snapshot took, measured as the drop in free space of its filesystem: cheap, and
  // an upper bound, since production's own writes to that filesystem meanwhile count too.
  uint64_t free_after = FreeBytes(config.snapshot_dir);
  uint64_t disk_used = free_before > free_after ? free_before - free_after : 0;
  double duration_s = SecondsSince(started);

  nlohmann::json meta = {{"snapshot_id", snapshot_id},
                         {"upgrade_id", upgrade_id},
                         {"system_identifier", std::to_string(served_sysid)},
                         {"timeline", taken.timeline},
                         {"backup_start_lsn", taken.start_lsn},
                         {"backup_stop_lsn", taken.stop_lsn},
                         {"size_bytes", size_bytes},
                         {"disk_used_bytes", disk_used},
                         {"duration_s", Round1(duration_s)},
                         {"extensions", extensions},
                         {"layout", layout.ToJson()},
                         {"created_at", NowIso8601()},
                         {"method", taken.method},
                         {"method_reason", choice.reason},
                         {"verification", taken.verification},
                         {"verified", true}};
  if (taken.detail.contains("tablespace_map")) meta["tablespace_map"] = taken.detail["tablespace_map"];

  Publish(dir, partial, data_dir, meta_path, meta, layout);
  ctx.journal().Update(upgrade_id, [&](JournalDoc& doc) { doc.snapshot_id = snapshot_id; });
  nlohmann::json detail = taken.detail;
  detail.erase("tablespace_map");
  detail["duration_s"] = Round1(duration_s);
  detail["method"] = taken.method;
  detail["verification"] = taken.verification.value("method", "");
  detail["disk_used_bytes"] = disk_used;
  ctx.Info("snapshot",
           "snapshot " + snapshot_id + " verified: " + std::to_string(size_bytes / kMiB) + " MB (" +
               taken.method + "), " + taken.start_lsn + " to " + taken.stop_lsn + " on timeline " +
               std::to_string(taken.timeline),
           detail);

  RunRetention(ctx, snapshot_id);
  return meta;
}

}  // namespace safe_upgrade
