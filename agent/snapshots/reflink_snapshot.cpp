// The reflink snapshot method: PostgreSQL's low-level backup API (pg_backup_start / pg_backup_stop,
// non-exclusive, on one held connection) around copy-on-write clones of the cluster's files, then
// the WAL from the backup's start to its stop taken from the agent's archive.
//
// Nothing here reads the data: cloning a file shares its extents, so the copy's time and disk
// follow the number of files, not their size. Its verification must not read the data either
// (there is no backup_manifest, and a checksum pass would read every block, which production still
// shares with the copy and which proves nothing about the copy's metadata). What can go wrong with
// such a snapshot is its WAL and its coherence: a segment missing or damaged, a backup_label that
// does not match the files, a pg_control torn. So it is proven good by
//   1. pg_waldump reading every record from the backup's start to its stop in the snapshot's own
//      pg_wal (each record's CRC, and no gap), and
//   2. a throwaway clone of the snapshot (itself a reflink copy) started as an isolated server:
//      it starts only after replaying to the backup's end record, which is what PostgreSQL calls
//      a consistent state, and is then stopped and removed. Replay verifies the checksum of each
//      page it reads when the cluster has data checksums.
// Both cost what the WAL written during the snapshot costs, whatever the cluster's size.
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>

#include "base/fs_util.h"
#include "postgres/backup_files.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"
#include "postgres/wal_archive.h"
#include "scratch/clone.h"
#include "snapshots/snapshot_methods.h"
#include "storage/reflink.h"
#include "storage/reflink_copy.h"

namespace safe_upgrade {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kProgressEventInterval = std::chrono::seconds(2);

// One non-exclusive backup on one connection. It ends on every path: Stop() on success, otherwise
// pg_backup_stop(false) and the session's end (PostgreSQL aborts a non-exclusive backup whose
// session ends, so a crashed agent leaves none behind either).
class BackupSession {
 public:
  BackupSession(const AgentConfig& config, const std::string& label) {
    const std::string fast = config.backup_checkpoint == "fast" ? "true" : "false";
    conn_ = ConnectProduction(config, "safe-upgrade-agent snapshot");
    // pg_backup_stop waits for the archiver; a broken archive_command must not hold the job forever.
    conn_->Exec("SELECT pg_catalog.set_config('statement_timeout', $1, false)",
                {std::to_string(std::max(60, config.job_timeout_s) * 1000)});
    start_lsn_ =
        conn_->Exec("SELECT pg_catalog.pg_backup_start($1, $2::boolean)::text", {label, fast}).Scalar();
  }
  ~BackupSession() {
    if (stopped_ || !conn_) return;
    try {
      conn_->Exec("SELECT pg_catalog.pg_backup_stop(false)");
    } catch (const std::exception& e) {
      spdlog::warn(
          "could not end the interrupted backup with pg_backup_stop ({}); closing its session ends it",
          e.what());
    }
  }
  BackupSession(const BackupSession&) = delete;
  BackupSession& operator=(const BackupSession&) = delete;

  struct Stopped {
    std::string lsn, labelfile, spcmapfile;
  };
  // pg_backup_stop(wait_for_archive => true): returns once the backup's last segment is archived.
  Stopped Stop() {
    auto r = conn_->Exec("SELECT lsn::text, labelfile, spcmapfile FROM pg_catalog.pg_backup_stop(true)");
    stopped_ = true;
    if (r.rows.empty() || !r.rows[0][0] || !r.rows[0][1])
      throw JobFailure("pg_backup_stop returned no stop position or backup_label");
    return {*r.rows[0][0], *r.rows[0][1], r.rows[0][2].value_or("")};
  }
  PgConn& conn() { return *conn_; }
  const std::string& start_lsn() const { return start_lsn_; }

 private:
  std::unique_ptr<PgConn> conn_;
  std::string start_lsn_;
  bool stopped_ = false;
};

std::string Mb(uint64_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MB"; }

ReflinkCopyStats CloneFiles(JobContext& ctx, const SnapshotTarget& target, const ExternalLayout& layout) {
  auto last_event = Clock::now();
  auto on_file = [&](const ReflinkCopyStats& s) {
    if (Clock::now() - last_event < kProgressEventInterval) return;
    last_event = Clock::now();
    ctx.Info("snapshot", "cloned " + std::to_string(s.files) + " files (" + Mb(s.bytes) + ")",
             {{"files", s.files}, {"bytes", s.bytes}});
  };
  try {
    return ReflinkCopyDataDirectory(ctx.config().data_directory, target.partial, target.tablespaces_partial,
                                    layout, on_file);
  } catch (const std::exception& e) {
    throw JobFailure(std::string("the reflink copy of the data directory failed: ") + e.what() +
                         "; the partial copy is removed by the next snapshot attempt",
                     {{"partial", target.partial}});
  }
}

// The backup's segments, from the one holding its start to the one holding the byte before its
// stop (the backup-end record ends there; pg_backup_stop switched to a new segment after it).
size_t CopyBackupWal(const AgentConfig& config, const SnapshotTarget& target, uint32_t timeline,
                     uint64_t start, uint64_t stop, uint64_t segment_bytes) {
  try {
    ProveWalArchiveCovers(config, target.system_identifier, timeline, start, stop - 1);
  } catch (const std::exception& e) {
    throw JobFailure(
        std::string("the WAL archive does not hold the snapshot's WAL: ") + e.what(),
        {{"hint", "Check archive_command and the agent's wal_archive_dir, then retry the upgrade."}});
  }
  size_t copied = 0;
  std::string pg_wal = JoinPath(target.partial, "pg_wal");
  for (uint64_t lsn = start - start % segment_bytes; lsn < stop; lsn += segment_bytes, ++copied) {
    std::string name = WalSegmentName(timeline, lsn, static_cast<uint32_t>(segment_bytes));
    CloneOrCopyFile(JoinPath(config.wal_archive_dir, name), JoinPath(pg_wal, name), 0600);
  }
  return copied;
}

// Every record of the backup's range, read from the snapshot's own pg_wal.
nlohmann::json VerifyWal(const AgentConfig& config, const SnapshotTarget& target, uint32_t timeline,
                         const std::string& start, const std::string& stop) {
  auto started = Clock::now();
  auto r = RunProcess(
      {JoinPath(config.bin_dir, "pg_waldump"), "--quiet", "--path", JoinPath(target.partial, "pg_wal"),
       "--timeline", std::to_string(timeline), "--start", start, "--end", stop},
      SnapshotToolOptions(config));
  if (!r.Ok())
    throw JobFailure("the snapshot's WAL from " + start + " to " + stop +
                         " does not read back: " + r.Describe("pg_waldump") +
                         "; the partial copy is kept for inspection and removed by the next snapshot attempt",
                     {{"tool", "pg_waldump"}, {"exit_code", r.exit_code}, {"stderr", r.err}});
  return {{"from", start}, {"to", stop}, {"seconds", Round1(SecondsSince(started))}};
}

// A throwaway reflink clone of the partial snapshot, started until it is consistent, then removed.
nlohmann::json VerifyByClone(JobContext& ctx, const SnapshotTarget& target) {
  auto started = Clock::now();
  Clone clone(ctx, target.snapshot_id, target.partial);
  nlohmann::json out;
  try {
    clone.Create(0.7, 0.75);
    clone.Start();
    auto conn = clone.Connect("safe-upgrade-agent snapshot-check");
    out["in_recovery"] = conn->Exec("SELECT pg_catalog.pg_is_in_recovery()::text").Scalar() == "true";
    out["checksum_failures"] = std::stoull(
        conn->Exec(
                "SELECT coalesce(sum(checksum_failures), 0)::bigint::text FROM pg_catalog.pg_stat_database")
            .Scalar());
  } catch (const std::exception& e) {
    throw JobFailure(
        std::string("the reflink snapshot failed verification: a throwaway clone of it did not reach "
                    "a consistent state: ") +
            e.what(),
        {{"partial", target.partial}});
  }
  clone.Teardown();
  if (out["in_recovery"].get<bool>() || out["checksum_failures"].get<uint64_t>() > 0)
    throw JobFailure("the reflink snapshot failed verification: its throwaway clone " +
                         std::string(out["in_recovery"].get<bool>() ? "stayed in recovery"
                                                                    : "reported data checksum failures"),
                     out);
  out["reached_consistency"] = true;
  out["seconds"] = Round1(SecondsSince(started));
  return out;
}

}  // namespace

BackupTaken TakeReflinkSnapshot(JobContext& ctx, const SnapshotTarget& target, const ExternalLayout& layout) {
  const AgentConfig& config = ctx.config();
  auto started = Clock::now();
  ReflinkCopyStats stats;
  BackupSession::Stopped stopped;
  uint64_t segment_bytes = 0;
  std::string checksums, start_lsn;
  double copy_s = 0;
  {
    BackupSession session(config, "safe-upgrade " + target.snapshot_id);
    start_lsn = session.start_lsn();
    segment_bytes =
        std::stoull(session.conn()
                        .Exec("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'")
                        .Scalar());
    checksums = session.conn().Exec("SHOW data_checksums").Scalar();
    ctx.Info("snapshot", "backup started at " + start_lsn + " (pg_backup_start, " + config.backup_checkpoint +
                             " checkpoint); cloning the data directory into " + target.partial);
    ctx.Failpoint("snapshot:reflink_backup_started");
    auto copy_started = Clock::now();
    stats = CloneFiles(ctx, target, layout);
    copy_s = SecondsSince(copy_started);
    ctx.Progress(0.4);
    ctx.Info("snapshot",
             "cloned " + std::to_string(stats.files) + " files (" + Mb(stats.bytes) + ") in " +
                 std::to_string(Round1(copy_s)).substr(0, 5) + " s",
             {{"files", stats.files},
              {"directories", stats.directories},
              {"links", stats.links},
              {"bytes", stats.bytes},
              {"vanished", stats.vanished},
              {"copy_s", Round1(copy_s)}});
    stopped = session.Stop();
  }
  // pg_basebackup's plain format puts these in the copy too. tablespace_map is not written into
  // it: at startup it would point the copy's tablespaces back at production's locations. The
  // copy's pg_tblspc links point at the snapshot's own copies instead, as pg_basebackup -Fp with
  // --tablespace-mapping leaves them, and the map is kept in snapshot.json.
  AtomicWriteFile(JoinPath(target.partial, "backup_label"), stopped.labelfile, 0600);
  BackupLabelFacts label = ParseBackupLabel(stopped.labelfile);
  ctx.Info("snapshot", "backup stopped at " + stopped.lsn + " (pg_backup_stop; its WAL is archived)");

  size_t segments = CopyBackupWal(config, target, label.timeline, ParseLsn(label.start_lsn),
                                  ParseLsn(stopped.lsn), segment_bytes);
  SyncStats synced = SyncTree(target.partial);
  ctx.Progress(0.6);
  ctx.Info("snapshot",
           "copied " + std::to_string(segments) + " WAL segment(s) from the archive; snapshot synced to disk",
           {{"wal_segments", segments}, {"synced_files", synced.files}, {"sync_s", Round1(synced.seconds)}});
  ctx.Failpoint("snapshot:reflink_after_copy");

  nlohmann::json wal = VerifyWal(config, target, label.timeline, label.start_lsn, stopped.lsn);
  ctx.Info("snapshot", "pg_waldump read every WAL record from " + label.start_lsn + " to " + stopped.lsn,
           wal);
  nlohmann::json clone = VerifyByClone(ctx, target);
  ctx.Progress(0.95);
  ctx.Info("snapshot", "a throwaway clone of the snapshot reached a consistent state, then was removed",
           clone);

  BackupTaken taken;
  taken.method = "reflink";
  taken.start_lsn = label.start_lsn;
  taken.stop_lsn = stopped.lsn;
  taken.timeline = label.timeline;
  taken.verification = {{"method", "wal_and_clone"},
                        {"checks",
                         "pg_waldump read every WAL record of the backup's range from the snapshot, and "
                         "a throwaway clone of it replayed to the backup's end and started"},
                        {"wal", wal},
                        {"clone", clone},
                        {"data_checksums", checksums},
                        {"data_read", false}};
  taken.detail = {{"files", stats.files},
                  {"copy_s", Round1(copy_s)},
                  {"wal_segments", segments},
                  {"tablespace_map", stopped.spcmapfile},
                  {"reflink_s", Round1(SecondsSince(started))}};
  return taken;
}

}  // namespace safe_upgrade
