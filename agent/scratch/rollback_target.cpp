// The parked rollback target: preparing it, telling whether it is parked, discarding it.
#include "scratch/rollback_target.h"

#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "base/copy_progress.h"
#include "base/fs_util.h"
#include "base/process.h"
#include "core/state_table.h"
#include "postgres/backup_files.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/pgbackrest.h"
#include "postgres/recovery_settings.h"
#include "postgres/tablespaces.h"
#include "scratch/clone.h"
#include "scratch/target_facts.h"
#include "storage/reflink.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

constexpr const char* kPhase = "rollback_target";
// sun_path is 108 bytes; the socket file is "<dir>/.s.PGSQL.<port>".
constexpr size_t kMaxSocketDirLength = 90;

// Scratch of the target that is not the data directory: its log and socket directory.
std::string RunDir(const AgentConfig& config, int64_t id) {
  return JoinPath(config.ClonesDir(), "ready-" + std::to_string(id));
}

constexpr size_t kLogTailBytes = 2000;

// Debian-style layout: the configuration lives outside the data directory (cluster.config_file)
// and names the real hba_file and ident_file and its includes. The parked run reads that very
// file, as production will after the swap; a copy of it inside the target would not find them.
std::vector<std::string> ExternalConfigOptions(const AgentConfig& config, const std::string& dir) {
  if (config.config_file.empty() || PathExists(JoinPath(dir, "postgresql.conf"))) return {};
  if (!PathExists(config.config_file))
    throw std::runtime_error("cluster.config_file " + config.config_file + " does not exist");
  // The file's own data_directory is production's.
  return {"-c config_file=" + ShellQuote(config.config_file), "-c data_directory=" + ShellQuote(dir)};
}

std::vector<std::string> ServerOptions(const AgentConfig& config, int64_t id, int port,
                                       const std::string& socket_dir) {
  // Command-line settings win over postgresql.conf and postgresql.auto.conf, and, unlike them,
  // do not stay in the directory that becomes production after the swap.
  return {
      "-c port=" + std::to_string(port),
      "-c listen_addresses=''",
      "-c unix_socket_directories=" + ShellQuote(socket_dir),
      "-c unix_socket_permissions=0700",
      // Never archive into production's archive, never stream from production.
      "-c archive_mode=off",
      "-c primary_conninfo=''",
      "-c primary_slot_name=''",
      "-c hot_standby=off",
      // Commands a standby would run at restartpoints or at the end of recovery: one copied from
      // production could prune production's archive.
      "-c archive_cleanup_command=''",
      "-c recovery_end_command=''",
      "-c promote_trigger_file=''",
      // Promoted at the restore point in advance (its end-of-recovery checkpoint paid now, not
      // during a rollback), then stopped cleanly by the apply: after the swap the server starts
      // with nothing to replay and nothing to promote. Nobody can connect to it meanwhile, and
      // with autovacuum off it writes almost nothing on its new timeline.
      "-c recovery_target_action=promote",
      "-c autovacuum=off",
      // Notice the restore point soon after it is archived (the default retry is 5 s).
      "-c wal_retrieve_retry_interval=200ms",
      "-c safe_upgrade.enabled=off",
      // Production's external PID file, if it has one, must not be overwritten.
      "-c external_pid_file=" + ShellQuote(JoinPath(RunDir(config, id), "external.pid")),
      "-c shared_buffers=128MB",
      "-c huge_pages=off",
      "-c logging_collector=off",
      "-c log_destination=stderr",
      "-c cluster_name=" + ShellQuote("safe-upgrade rollback target " + std::to_string(id)),
  };
}

json ColdResult(const std::string& reason) { return {{"mode", "cold"}, {"reason", reason}}; }

class Preparation {
 public:
  explicit Preparation(JobContext& ctx) : ctx_(ctx), config_(ctx.config()), id_(ctx.upgrade_id()) {}

  json Run() {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback-target");
    UpgradeRecord u = LoadUpgrade(*conn, id_);
    if (u.state != StateName(UpgradeState::kScheduled))
      throw JobFailure("upgrade " + std::to_string(id_) + " is " + u.state +
                       ", not scheduled; a rollback target is prepared only before the restore point");
    std::string mode = u.options.value("rollback_target", "auto");
    if (mode == "cold") {
      ctx_.Info(kPhase, "rollback_target is cold: a rollback would restore the snapshot and replay WAL");
      return ColdResult("the option rollback_target is cold");
    }
    restore_point_ =
        conn->Exec("SELECT safe_upgrade.restore_point_name($1::bigint)", {std::to_string(id_)}).Scalar();
    conn.reset();
    try {
      return Prepare();
    } catch (const std::exception& e) {
      std::string reason = e.what();
      DiscardRollbackTarget(config_, ctx_.journal(), id_, "its preparation failed");
      if (mode == "ready")
        throw JobFailure("could not prepare the rollback target (rollback_target is ready): " + reason +
                         "; production was not touched");
      ctx_.Event(kPhase, "warning",
                 "no fast rollback target: " + reason + "; a rollback would restore the snapshot instead");
      return ColdResult(reason);
    }
  }

 private:
  json Prepare() {
    std::string snapshot_id = SnapshotIdFor(id_);
    json meta = LoadSnapshotMeta(config_, snapshot_id);
    const bool from_stanza = IsPgBackRestSnapshot(meta);
    std::string source = SnapshotDataDir(config_, snapshot_id);
    uint64_t total = meta.value("size_bytes", uint64_t{0});
    if (!total && !from_stanza) total = TreeSize(source);
    std::string dir = RollbackTargetDir(config_, id_);
    // Its tablespaces and WAL go next to production's (so that the swap is renames); the WAL
    // next to where production's pg_wal links now.
    ExternalLayout layout = ExternalLayout::FromJson(meta.value("layout", json::object()));
    layout.wal_dir = ReadExternalLayout(config_.data_directory, layout.version_dir).wal_dir;
    std::vector<Placement> placements = {{Dirname(config_.data_directory), total}};
    for (const auto& ts : layout.tablespaces) {
      placements.push_back({ts.location, ts.size_bytes});
      placements[0].bytes -= std::min(placements[0].bytes, ts.size_bytes);
    }
    if (!layout.wal_dir.empty() && !from_stanza)
      placements.push_back({Dirname(layout.wal_dir), TreeSize(JoinPath(source, "pg_wal"))});
    if (!from_stanza) DiscountSharedExtents(SnapshotDir(config_, snapshot_id), placements);
    std::string short_of = RoomRefusal(placements, config_.disk_reserve_mb * 1024 * 1024);
    if (!short_of.empty())
      throw std::runtime_error("not enough free disk for it next to production: " + short_of);

    // An earlier attempt's target is scratch, like this one.
    DiscardRollbackTarget(config_, ctx_.journal(), id_, "a new one is prepared");
    std::string run_dir = RunDir(config_, id_);
    std::string socket_dir = JoinPath(run_dir, "run");
    if (socket_dir.size() > kMaxSocketDirLength) {
      std::string tmpl = "/tmp/su-ready-XXXXXX";
      if (!mkdtemp(tmpl.data())) throw std::runtime_error("could not create a socket directory for it");
      socket_dir = tmpl;
    }
    int port = FindFreePort();
    RollbackTargetRecord target;
    target.dir = dir;
    target.run_dir = run_dir;
    target.socket_dir = socket_dir;
    target.log = JoinPath(run_dir, "postgres.log");
    target.port = port;
    target.restore_point = restore_point_;
    target.snapshot_id = snapshot_id;
    target.layout = layout.ToJson();
    target.state = TargetState::kCopying;
    target.created_at = NowIso8601();
    // Journaled before anything exists on disk, so a crash at any later point leaves nothing
    // the agent does not know about.
    ctx_.journal().Update(id_, [&](JournalDoc& doc) { doc.rollback_target = target; });

    EnsureDir(config_.ClonesDir(), 0700);
    EnsureDir(run_dir, 0700);
    EnsureDir(socket_dir, 0700);
    double copy_s = 0;
    if (from_stanza) {
      std::string label = meta["pgbackrest"].value("label", "");
      ctx_.Info(kPhase,
                "restoring pgBackRest backup " + label + " (" + Megabytes(total) + ") to " + dir +
                    " as the rollback target",
                {{"bytes", total}, {"dir", dir}, {"label", label}});
      auto started = std::chrono::steady_clock::now();
      RestorePgBackRestSnapshot(config_, meta, dir);
      copy_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      ctx_.Progress(0.9);
    } else {
      ctx_.Info(kPhase,
                "copying snapshot " + snapshot_id + " (" + Megabytes(total) + ") to " + dir +
                    " as the rollback target",
                {{"bytes", total}, {"dir", dir}});
      copy_s = CopyTreeReporting(ctx_, kPhase, source, dir, total, 0.0, 0.9);
      CopyOutsideForTarget(layout, dir, id_);
    }
    ctx_.Failpoint("rollback_target:after:copy");
    Configure(dir, meta);
    // Now, while production still serves and before the restore point exists, so that the
    // downtime of a rollback never pays for it: after the swap production runs on these files.
    SyncStats synced = SyncTree(dir);
    target.synced = RollbackTargetRecord::Synced{synced.files, synced.directories, synced.seconds};
    ctx_.Info(kPhase,
              "rollback target synced to disk: " + std::to_string(synced.files) + " files in " +
                  std::to_string(synced.seconds).substr(0, 5) + " s",
              {{"files", synced.files}, {"directories", synced.directories}, {"seconds", synced.seconds}});
    Start(target, port, socket_dir, meta.value("timeline", 1u));
    target.state = TargetState::kFollowing;
    ctx_.journal().Update(id_, [&](JournalDoc& doc) { doc.rollback_target = target; });
    ctx_.Progress(1.0);
    ctx_.Info(kPhase,
              "rollback target ready in " + std::to_string(copy_s).substr(0, 5) +
                  " s: it follows the WAL archive and will stop at restore point " + restore_point_ +
                  ", so a rollback is a stop, a swap and a start",
              {{"dir", dir}, {"port", port}, {"bytes", total}, {"copy_s", copy_s}});
    return {{"mode", "ready"},  {"dir", dir},   {"bytes", total},
            {"copy_s", copy_s}, {"port", port}, {"restore_point", restore_point_}};
  }

  void Configure(const std::string& dir, const json& meta) {
    for (const char* f : {"recovery.signal", "postmaster.pid", "postmaster.opts"})
      if (PathExists(JoinPath(dir, f))) RemoveTree(JoinPath(dir, f));
    // The same settings the cold path writes, with promote as the action. Standby mode makes it
    // wait for the restore point to appear in the archive.
    WriteRecoveryBlock(config_, dir, {restore_point_, meta.value("timeline", 1), "promote"});
    AtomicWriteFile(JoinPath(dir, "standby.signal"), "", 0600);
  }

  void Start(const RollbackTargetRecord& target, int port, const std::string& socket_dir,
             uint32_t meta_timeline) {
    const std::string &dir = target.dir, &log = target.log;
    std::vector<std::string> options = ExternalConfigOptions(config_, dir);
    for (auto& o : ServerOptions(config_, id_, port, socket_dir)) options.push_back(std::move(o));
    // Not waiting: a target whose restore point is already archived parks (exits) at once,
    // which pg_ctl -w would report as a failed start; readiness is polled below instead.
    ServerControl(config_.bin_dir, dir, "pg_ctl", "", log)
        .LowPriority()
        .Start(options, std::chrono::seconds(60), /*wait=*/false);
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(std::max(60, config_.job_timeout_s));
    // pg_ctl -W returns before postmaster.pid exists; give the server a moment to write it.
    auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
      // hot_standby is off, so postmaster.pid never says "standby": the control file tells that
      // the copy replayed its backup to consistency and now waits in the archive for more WAL.
      std::string why;
      if (ScratchPostmaster(dir)) {
        auto facts = ControlFacts(config_, dir, why);
        // Promoted at once: its restore point was archived already.
        if (facts && (Consistent(*facts) || Promoted(*facts, meta_timeline))) return;
      }
      if (!ScratchPostmaster(dir) && std::chrono::steady_clock::now() > grace) {
        throw std::runtime_error("the rollback target exited while starting; its log ends with:\n" +
                                 FileTail(log, kLogTailBytes));
      }
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error(
            "the rollback target did not reach standby mode in time; its log ends with:\n" +
            FileTail(log, kLogTailBytes));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  JobContext& ctx_;
  const AgentConfig& config_;
  int64_t id_;
  std::string restore_point_;
};

}  // namespace

std::string RollbackTargetDir(const AgentConfig& config, int64_t upgrade_id) {
  return config.data_directory + ".ready-" + std::to_string(upgrade_id);
}

json RunPrepareRollbackJob(JobContext& ctx) { return Preparation(ctx).Run(); }

ParkedState ParkRollbackTarget(const AgentConfig& config, const RollbackTargetRecord& target,
                               const RestorePointAt& rp, std::chrono::seconds timeout) {
  const std::string& restore_point = rp.name;
  ParkedState out;
  const std::string& dir = target.dir;
  if (target.state != TargetState::kFollowing && target.state != TargetState::kParked) {
    out.reason = "it was never started (journal state \"" + ToString(target.state) + "\")";
    return out;
  }
  if (target.restore_point != restore_point) {
    out.reason = "it waits for restore point " + target.restore_point + ", not " + restore_point;
    return out;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (ScratchPostmaster(dir)) {
    std::string why;
    auto facts = ControlFacts(config, dir, why);
    if (facts && Promoted(*facts, static_cast<uint32_t>(rp.timeline))) {
      // A fast shutdown: its checkpoint finds almost nothing to write after the end-of-recovery one.
      try {
        ServerControl(config.bin_dir, dir, "pg_ctl").Stop("fast", std::chrono::seconds(120));
      } catch (const std::exception& e) {
        out.reason = std::string("it was promoted but did not stop cleanly: ") + e.what();
        return out;
      }
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      out.reason = "it had not reached restore point " + restore_point + " after " +
                   std::to_string(timeout.count()) + " s";
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  out.parked = ParkedAt(config, target, rp, out.reason, out.facts);
  if (out.parked) MarkHistoryForArchiving(dir, out.facts["timeline"].get<uint32_t>());
  return out;
}

void ParkBeforeApply(JobContext& ctx, const RestorePointAt& rp, const std::string& rollback_target_option) {
  const std::optional<RollbackTargetRecord> journaled = ctx.journal().Load(ctx.upgrade_id()).rollback_target;
  if (!journaled) return;
  const RollbackTargetRecord& target = *journaled;
  if (target.state == TargetState::kParked) return;
  // It replays what production wrote since the snapshot; production serves meanwhile.
  auto timeout = std::chrono::seconds(std::clamp(ctx.config().job_timeout_s, 60, 600));
  ParkedState parked = ParkRollbackTarget(ctx.config(), target, rp, timeout);
  json detail = parked.facts;
  detail["dir"] = target.dir;
  if (parked.parked) {
    ctx.journal().Update(ctx.upgrade_id(), [&](JournalDoc& d) {
      if (!d.rollback_target) d.rollback_target = target;
      d.rollback_target->state = TargetState::kParked;
      d.rollback_target->parked = parked.facts;
    });
    ctx.Info("applying",
             "the rollback target was promoted at restore point " + rp.name + " (timeline " +
                 std::to_string(parked.facts.value("timeline", 0)) +
                 ") and shut down cleanly: a rollback starts it with nothing to replay",
             detail);
    return;
  }
  DiscardRollbackTarget(ctx.config(), ctx.journal(), ctx.upgrade_id(), "it could not be parked");
  if (rollback_target_option == "ready")
    throw JobFailure("the rollback target could not be parked at restore point " + rp.name + ": " +
                         parked.reason + " (rollback_target is ready); production was not touched",
                     {{"refused", true}, {"rollback_target", detail}});
  ctx.Event("applying", "warning",
            "the rollback target cannot be used: " + parked.reason +
                "; a rollback would restore the snapshot instead",
            detail);
}

void DiscardRollbackTarget(const AgentConfig& config, Journal& journal, int64_t upgrade_id,
                           const std::string& why) {
  const std::optional<RollbackTargetRecord> journaled = journal.Load(upgrade_id).rollback_target;
  std::string dir = RollbackTargetDir(config, upgrade_id);
  std::string run_dir = RunDir(config, upgrade_id);
  std::string socket_dir;
  ExternalLayout layout;
  bool swapped = false;
  if (journaled) {
    swapped = journaled->state == TargetState::kSwapped;
    socket_dir = journaled->socket_dir;
    layout = ExternalLayout::FromJson(journaled->layout);
  }
  // A swapped-in target is production now; only its journal entry and scratch go.
  if (!swapped && IsDirectory(dir)) {
    StopScratchServer(upgrade_id, config.bin_dir, dir);
    RemoveTree(dir);
    spdlog::info("upgrade {}: removed the rollback target {} ({})", upgrade_id, dir, why);
  }
  // Its tablespace and WAL copies still in their .ready places were never swapped in.
  DiscardTargetOutside(layout, upgrade_id);
  if (IsDirectory(run_dir)) RemoveTree(run_dir);
  if (!socket_dir.empty() && socket_dir.rfind("/tmp/su-ready-", 0) == 0 && IsDirectory(socket_dir))
    RemoveTree(socket_dir);
  if (journaled) journal.Update(upgrade_id, [](JournalDoc& d) { d.rollback_target.reset(); });
}

void ReleaseRollbackTarget(JobContext& ctx, const std::string& phase, const std::string& why) {
  try {
    DiscardRollbackTarget(ctx.config(), ctx.journal(), ctx.upgrade_id(), why);
  } catch (const std::exception& e) {
    ctx.Event(phase, "warning", std::string("could not remove the rollback target: ") + e.what());
  }
}

void DiscardRollbackTargetsExcept(const AgentConfig& config, Journal& journal,
                                  const std::set<int64_t>& keep) {
  for (int64_t id : journal.UpgradeIds()) {
    if (keep.count(id)) continue;
    try {
      if (!journal.Load(id).rollback_target) continue;
      DiscardRollbackTarget(config, journal, id, "the upgrade can no longer roll back through it");
    } catch (const std::exception& e) {
      spdlog::error("upgrade {}: could not remove the rollback target: {}", id, e.what());
    }
  }
}

std::set<int64_t> UpgradesThatMayRollBack(PgConn& conn) {
  return UpgradeIdsInStates(conn, StateNamesWhere(&StateRow::may_roll_back));
}

}  // namespace safe_upgrade
