// Rollback job: check everything it needs while production still runs, record the data-loss
// window, stop the server, move the data directory aside, put a copy at the restore point in its
// place, recover, verify, clean the recovery settings and write the outcome into the restored
// catalog. If anything fails after the stop, the original data directory is put back and
// started, so production is never left down by a rollback. Nothing is ever deleted.
#include "jobs/rollback.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "postgres/recovery_settings.h"
#include "postgres/tablespaces.h"
#include "postgres/upgrade_runner.h"
#include "scratch/rollback_target.h"
#include "storage/reflink.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

constexpr const char* kRestoredMarker = "safe_upgrade_restored_from";
// How long a rollback waits for the parked target to reach the restore point before it falls
// back to restoring the snapshot.
constexpr std::chrono::seconds kParkWait{120};

int StepIndex(const std::string& step) {
  const auto& steps = RollbackSteps();
  auto it = std::find(steps.begin(), steps.end(), step);
  return it == steps.end() ? -1 : static_cast<int>(it - steps.begin());
}

// 20261201T210402Z: part of the names of the directories a rollback sets aside, so that they
// never collide with those of an earlier cluster (upgrade ids start again at 1 in a re-created
// cluster of the same name).
std::string CompactUtcStamp() {
  std::string iso = NowIso8601();  // 2026-12-01T21:04:02.123Z
  std::string out;
  for (char ch : iso.substr(0, iso.find('.')))
    if (ch != '-' && ch != ':') out += ch;
  return out + "Z";
}

double EpochSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class Rollback {
 public:
  explicit Rollback(JobContext& ctx)
      : ctx_(ctx),
        config_(ctx.config()),
        id_(ctx.upgrade_id()),
        server_(config_.bin_dir, config_.data_directory, config_.control, "", config_.server_log) {}

  json Run() {
    json doc = ctx_.journal().Load(id_);
    std::string status = doc.value("rollback", "none");
    if (status == "rolled_back" || status == "rollback_failed")
      throw JobFailure("upgrade " + std::to_string(id_) + " was already rolled back (" + status + ")",
                       {{"stage", "precheck"}}, JobFailureKind::kRefused);
    step_ = status == "in_progress" ? StepIndex(doc.value("rollback_step", "")) : -1;
    if (doc.contains("rollback_context")) rc_ = doc["rollback_context"];
    // Journaled by an agent that recorded the window before checking the target: nothing was
    // stopped yet, so the rollback starts over.
    if (step_ == StepIndex("window_recorded") && !rc_.contains("dir_suffix")) step_ = -1;
    if (step_ >= 0) ctx_.Info("rolling_back", "resuming the rollback after step " + RollbackSteps()[step_]);
    // Interrupted while putting the original back: finish that, never the rollback's steps.
    if (doc.contains("rollback_putting_back"))
      return PutOriginalBack(doc["rollback_putting_back"].get<std::string>());

    // Production still runs, untouched: any failure here refuses the rollback.
    try {
      Do("prechecked", [&] { Precheck(); });
      Do("target_checked", [&] { CheckRollbackTarget(); });
      // Right before the stop, after the wait for the target: writes accepted until here are lost.
      Do("window_recorded", [&] { RecordWindow(); });
    } catch (const JobFailure& f) {
      ForgetRollback();
      throw JobFailure(f.what(), f.detail(), JobFailureKind::kRefused);
    } catch (const std::exception& e) {
      ForgetRollback();
      throw JobFailure(std::string("cannot roll back: ") + e.what() + "; production was not touched",
                       {{"stage", "precheck"}}, JobFailureKind::kRefused);
    }
    // From the stop on, any failure puts the original data directory back and starts it.
    try {
      Do("stopped", [&] { StopServer(); });
      Do("moved_aside", [&] { MoveAside(); });
      Do("restored", [&] { RestoreSnapshot(); });
      Do("configured", [&] { WriteRecoverySettings(); });
      Do("promoted", [&] { StartAndWaitForPromotion(); });
      Do("verified", [&] { VerifyRestored(); });
    } catch (const RecoveryFailed& e) {
      return PutOriginalBack(e.what());
    } catch (const std::exception& e) {
      return PutOriginalBack("rollback step \"" + running_ + "\" failed: " + e.what());
    }
    // Production runs at the restore point now; these retry safely if the agent restarts.
    Do("settings_removed", [&] { RemoveRecoverySettings(); });
    Do("outcome_written", [&] { WriteOutcome("rolled_back", ""); });
    Finish("rolled_back");
    // The target's scratch and journal entry go (a swapped-in target is production now).
    ReleaseRollbackTarget(ctx_, "rolling_back", "the rollback is over");
    return json{{"state", "rolled_back"},
                {"data_loss_window", rc_["window"]},
                {"path", PathName()},
                {"downtime_s", rc_.value("downtime_s", -1.0)}};
  }

 private:
  struct RecoveryFailed : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  template <typename F>
  void Do(const std::string& step, F body) {
    int index = StepIndex(step);
    if (step_ >= index) return;
    running_ = step;
    body();
    Journal(step);
    step_ = index;
    ctx_.Failpoint("rollback:after:" + step);
  }

  void Journal(const std::string& step, const std::string& status = "in_progress") {
    ctx_.journal().Update(id_, [&](json& doc) {
      doc["rollback"] = status;
      doc["rollback_step"] = step;
      doc["rollback_context"] = rc_;
    });
  }

  // A refused rollback leaves no trace that the next agent start would resume.
  void ForgetRollback() {
    ctx_.journal().Update(id_, [](json& doc) {
      for (const char* key : {"rollback", "rollback_step", "rollback_context"}) doc.erase(key);
    });
  }

  void Event(const std::string& level, const std::string& message, json detail = json::object()) {
    ctx_.Event("rolling_back", level, message, detail);
    rc_["events"].push_back({{"at", NowIso8601()},
                             {"phase", "rolling_back"},
                             {"level", level},
                             {"message", message},
                             {"detail", detail}});
  }

  // Nothing has been touched yet: refuse cleanly when the rollback cannot work.
  void Precheck() {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
    UpgradeRecord u = LoadUpgrade(*conn, id_);
    auto rp = LoadRestorePoint(*conn, id_);
    json fail_detail = {{"stage", "precheck"}};
    if (!rp)
      throw JobFailure("upgrade " + std::to_string(id_) + " has no restore point; it never reached apply",
                       fail_detail);
    std::string snapshot_id = SnapshotIdFor(id_);
    json meta;
    try {
      meta = LoadSnapshotMeta(config_, snapshot_id);
    } catch (const std::exception& e) {
      throw JobFailure(std::string("cannot roll back: ") + e.what(), fail_detail);
    }
    std::string sysid = conn->Exec("SELECT system_identifier::text FROM pg_control_system()").Scalar();
    if (meta.value("system_identifier", "") != sysid)
      throw JobFailure("snapshot " + snapshot_id + " belongs to another cluster (system identifier " +
                           meta.value("system_identifier", "?") + ", this cluster " + sysid + ")",
                       fail_detail);
    // Production's tablespaces and linked pg_wal are set aside and restored with the data directory.
    OutsidePlan outside;
    outside.snapshot = ExternalLayout::FromJson(meta.value("layout", json::object()));
    outside.production = ReadExternalLayout(config_.data_directory, outside.snapshot.version_dir);
    outside.snapshot_dir = SnapshotDir(config_, snapshot_id);
    std::string refusal = LayoutRefusal(outside.production, config_.data_directory);
    if (refusal.empty() && outside.snapshot.version_dir.empty() && !outside.production.tablespaces.empty())
      refusal = "snapshot " + snapshot_id + " recorded no tablespaces, but production has some";
    if (!refusal.empty()) throw JobFailure("cannot roll back: " + refusal, fail_detail);
    json journal = ctx_.journal().Load(id_);
    std::string target_state =
        journal.contains("rollback_target") ? journal["rollback_target"].value("state", "") : std::string();
    bool fast = target_state == "following" || target_state == "parked";
    rc_ = json::object();
    rc_["fast"] = fast;
    rc_["snapshot_bytes"] = meta.value("size_bytes", uint64_t{0});
    if (fast) rc_["rollback_target"] = journal["rollback_target"];
    rc_["extname"] = u.extname;
    rc_["from_version"] = u.from_version;
    rc_["databases"] = json::array();
    for (const auto& db : u.databases)
      rc_["databases"].push_back({{"datname", db.datname}, {"from_version", db.from_version}});
    rc_["to_version"] = u.to_version;
    rc_["snapshot_id"] = snapshot_id;
    rc_["snapshot_data"] = SnapshotDataDir(config_, snapshot_id);
    rc_["system_identifier"] = sysid;
    rc_["restore_point"] = {{"name", rp->name},
                            {"lsn", rp->lsn},
                            {"timeline", rp->timeline},
                            {"xid", rp->xid},
                            {"wal_segment", rp->wal_segment},
                            {"backup_stop_lsn", rp->backup_stop_lsn}};
    rc_["events"] = json::array();
    // Chosen once and journaled, so that a resumed rollback finds its directories again.
    rc_["dir_suffix"] = std::to_string(id_) + "-" + CompactUtcStamp();
    outside.suffix = rc_["dir_suffix"];
    rc_["outside"] = outside.ToJson();
    // Every path the rollback moves aside, journaled before the first move.
    rc_["set_aside"] = json::array({{{"from", config_.data_directory}, {"to", AsideDir()}}});
    for (const auto& moved : outside.SetAside()) rc_["set_aside"].push_back(moved);
    if (!fast) RequireDiskForRestore();
    RequireRoomToSetAside();
    if (!IsDirectory(rc_["snapshot_data"].get<std::string>()))
      throw JobFailure("cannot roll back: the data of snapshot " + snapshot_id + " (" +
                           rc_["snapshot_data"].get<std::string>() + ") is missing",
                       fail_detail);
  }

  // The names the rollback will create are free and their directory writable: found out after
  // the stop, either would leave production down.
  void RequireRoomToSetAside() {
    std::string parent = Dirname(config_.data_directory);
    if (access(parent.c_str(), W_OK | X_OK) != 0)
      throw JobFailure(
          "cannot roll back: " + parent + " (holding the data directory) is not writable by the agent",
          {{"stage", "precheck"}});
    std::vector<std::string> names = Outside().NamesToCreate();
    for (const std::string& dir : {AsideDir(), RestoringDir(), FailedRestoreDir()}) names.push_back(dir);
    for (const std::string& dir : names)
      if (PathExists(dir))
        throw JobFailure(
            "cannot roll back: " + dir + " already exists; move it away, it is not this rollback's",
            {{"stage", "precheck"}});
  }

  // The restored copy lands next to the data directory, and each tablespace next to production's.
  void RequireDiskForRestore() {
    OutsidePlan outside = Outside();
    uint64_t data_bytes = rc_["snapshot_bytes"].get<uint64_t>();
    for (const auto& ts : outside.snapshot.tablespaces) data_bytes -= std::min(data_bytes, ts.size_bytes);
    std::vector<Placement> placements =
        outside.RestorePlacements(data_bytes, Dirname(config_.data_directory));
    DiscountSharedExtents(rc_["snapshot_data"].get<std::string>(), placements);
    std::string short_of = RoomRefusal(placements, config_.disk_reserve_mb * 1024 * 1024);
    if (!short_of.empty())
      throw JobFailure("not enough disk to restore the snapshot: " + short_of, {{"stage", "precheck"}});
  }

  OutsidePlan Outside() const { return OutsidePlan::FromJson(rc_.value("outside", json::object())); }

  bool Fast() const { return rc_.value("fast", false); }
  // How this rollback gets to the restore point, as the report and the events name it.
  const char* PathName() const { return Fast() ? "parked target" : "snapshot restore"; }

  // Nothing is stopped yet. The parked target is used only if it stopped exactly at the restore
  // point; otherwise it is discarded and the snapshot is restored (the cold path).
  void CheckRollbackTarget() {
    if (!Fast()) {
      Event("info",
            "no parked rollback target: the snapshot will be restored and WAL replayed (the cold path)");
      return;
    }
    const json& rpj = rc_["restore_point"];
    RestorePointAt at{rpj["name"].get<std::string>(), rpj["lsn"].get<std::string>(),
                      rpj["timeline"].get<int>()};
    const std::string& rp = at.name;
    ParkedState parked = ParkRollbackTarget(config_, rc_["rollback_target"], at, kParkWait);
    json detail = parked.facts;
    detail["dir"] = rc_["rollback_target"].value("dir", "");
    if (parked.parked) {
      Event("info",
            "the rollback target prepared before the apply is parked at restore point " + rp +
                " (promoted there on timeline " + std::to_string(parked.facts.value("timeline", 0)) +
                " and shut down cleanly); rolling back by swapping it in (no copy, nothing to replay)",
            detail);
      return;
    }
    Event("warning",
          "the rollback target cannot be used: " + parked.reason + "; falling back to restoring the snapshot",
          detail);
    DiscardRollbackTarget(config_, ctx_.journal(), id_, "it was not parked at the restore point");
    rc_["fast"] = false;
    RequireDiskForRestore();
  }

  // Saves what the recovery is about to rewind (the upgrade's events and report), then notes
  // where production is: last, right before the stop, so the window covers every lost write.
  void RecordWindow() {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
    // The events written since the restore point vanish with PITR; keep them to write them back.
    auto events = conn->Exec(
        "SELECT id::text, at::text, phase, level, message, detail::text FROM safe_upgrade.events "
        "WHERE upgrade_id = $1::bigint ORDER BY id",
        {std::to_string(id_)});
    json saved = json::array();
    for (const auto& e : events.rows)
      saved.push_back({{"id", *e[0]},
                       {"at", *e[1]},
                       {"phase", *e[2]},
                       {"level", *e[3]},
                       {"message", *e[4]},
                       {"detail", json::parse(e[5].value_or("{}"))}});
    rc_["catalog_events"] = saved;
    auto report = conn->Exec("SELECT report::text FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                             {std::to_string(id_)});
    rc_["report"] = json::parse(report.rows.at(0)[0].value_or("{}"));
    auto per_database = conn->Exec(
        "SELECT datname::text, outcome, report::text, error FROM safe_upgrade.upgrade_databases "
        "WHERE upgrade_id = $1::bigint ORDER BY datname",
        {std::to_string(id_)});
    rc_["catalog_databases"] = json::array();
    for (const auto& row : per_database.rows)
      rc_["catalog_databases"].push_back({{"datname", row[0].value_or("")},
                                          {"outcome", row[1].value_or("")},
                                          {"report", json::parse(row[2].value_or("{}"))},
                                          {"error", row[3] ? json(*row[3]) : json(nullptr)}});
    auto r = conn->Exec(
        "SELECT pg_current_wal_lsn()::text, pg_snapshot_xmax(pg_current_snapshot())::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text, "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text, now()::text, "
        "(SELECT created_at::text FROM safe_upgrade.restore_points WHERE upgrade_id = $2::bigint)",
        {rc_["restore_point"]["lsn"].get<std::string>(), std::to_string(id_)});
    const auto& row = r.rows.at(0);
    std::string rp_xid = rc_["restore_point"]["xid"].get<std::string>();
    long long xids = rp_xid.empty() ? -1 : std::stoll(*row[1]) - std::stoll(rp_xid);
    rc_["timeline_before"] = std::stoi(*row[3]);
    rc_["window"] = {
        {"restore_point", rc_["restore_point"]["name"]},
        {"restore_point_lsn", rc_["restore_point"]["lsn"]},
        {"restore_point_xid", rp_xid},
        {"restore_point_created_at", row[5].value_or("")},
        {"rollback_started_lsn", *row[0]},
        {"rollback_started_xid", *row[1]},
        {"rollback_started_at", *row[4]},
        {"wal_bytes_discarded", std::stoll(*row[2])},
        {"transaction_ids_discarded", xids},
        {"loses", "every write committed after the restore point, including the upgrade itself"}};
    Event("info",
          "data-loss window recorded: " +
              std::to_string(rc_["window"]["wal_bytes_discarded"].get<long long>()) +
              " bytes of WAL and about " + std::to_string(xids) + " transaction ids after restore point " +
              rc_["restore_point"]["name"].get<std::string>() + " will be discarded",
          rc_["window"]);
  }

  void StopServer() {
    if (!server_.Running()) return;
    if (!rc_.contains("downtime_started")) rc_["downtime_started"] = EpochSeconds();
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

  // <id>-<UTC time of the precheck>; only the upgrade id in journals of earlier agents.
  std::string Suffix() const { return rc_.value("dir_suffix", std::to_string(id_)); }
  std::string AsideDir() const { return config_.data_directory + ".failed-" + Suffix(); }
  std::string RestoringDir() const { return config_.data_directory + ".restoring-" + Suffix(); }
  std::string FailedRestoreDir() const { return config_.data_directory + ".rollback-failed-" + Suffix(); }

  void MoveAside() {
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
    if (rc_["set_aside"].size() > 1)
      Event("info", "moved production's tablespaces and WAL directory aside too (kept, not deleted)",
            {{"set_aside", rc_["set_aside"]}});
  }

  void RestoreSnapshot() {
    if (PathExists(config_.data_directory) && PathExists(JoinPath(config_.data_directory, kRestoredMarker)))
      return;  // restored and renamed before a crash
    if (PathExists(config_.data_directory))
      throw std::runtime_error(config_.data_directory +
                               " reappeared while rolling back; refusing to overwrite it");
    if (Fast()) return SwapInTarget();
    // A partial copy from a crash is our own scratch, not a data directory anyone used.
    if (PathExists(RestoringDir())) RemoveTree(RestoringDir());
    Event("info", "restoring snapshot " + rc_["snapshot_id"].get<std::string>());
    auto started = std::chrono::steady_clock::now();
    CopyTree(rc_["snapshot_data"].get<std::string>(), RestoringDir());
    Outside().PrepareRestore(RestoringDir());
    AtomicWriteFile(JoinPath(RestoringDir(), kRestoredMarker), rc_["snapshot_id"].get<std::string>() + "\n");
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
  void SwapInTarget() {
    std::string dir = rc_["rollback_target"].value("dir", "");
    // Synced when it was prepared; one prepared by an earlier agent was not.
    if (!rc_["rollback_target"].contains("synced")) {
      SyncStats synced = SyncTree(dir);
      Event("info", "synced the parked rollback target to disk (" + std::to_string(synced.files) + " files)");
    }
    AtomicWriteFile(JoinPath(dir, kRestoredMarker),
                    rc_["snapshot_id"].get<std::string>() + " (parked target)\n");
    // Promoted: PostgreSQL removed its standby.signal; nothing must send it into recovery again.
    for (const char* f : {"postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"})
      if (PathExists(JoinPath(dir, f))) unlink(JoinPath(dir, f).c_str());
    // Its sanitized postgresql.conf was for the parked run (Debian layout: the real one is elsewhere).
    if (!config_.config_file.empty() && PathExists(JoinPath(dir, "postgresql.conf")))
      unlink(JoinPath(dir, "postgresql.conf").c_str());
    ctx_.journal().Update(id_, [](json& doc) {
      if (doc.contains("rollback_target")) doc["rollback_target"]["state"] = "swapped";
    });
    Outside().PutInPlace(dir);
    DurableRename(dir, config_.data_directory);
    Event("info", "swapped the parked rollback target in as the data directory");
  }

  void WriteRecoverySettings() {
    if (Fast()) {
      Event("info", "no recovery to configure: the parked target was promoted at restore point " +
                        rc_["restore_point"]["name"].get<std::string>() +
                        " before the rollback, so the server starts as after a clean shutdown");
      return;
    }
    WriteRecoveryBlock(config_, config_.data_directory,
                       {rc_["restore_point"]["name"].get<std::string>(),
                        rc_["restore_point"]["timeline"].get<int>(), "promote"});
    std::string standby = JoinPath(config_.data_directory, "standby.signal");
    if (PathExists(standby)) unlink(standby.c_str());
    AtomicWriteFile(JoinPath(config_.data_directory, "recovery.signal"), "", 0600);
    Event("info", "recovery configured: target restore point " +
                      rc_["restore_point"]["name"].get<std::string>() + " on timeline " +
                      std::to_string(rc_["restore_point"]["timeline"].get<int>()));
  }

  // The server's own reason for ending recovery: the last FATAL line that is not a client being
  // turned away while the server starts or stops.
  std::string LastFatalLine() const {
    if (config_.server_log.empty()) return "";
    std::string log;
    try {
      log = ReadFile(config_.server_log);
    } catch (...) {
      return "";
    }
    for (auto pos = log.rfind("FATAL:"); pos != std::string::npos && pos > 0;
         pos = log.rfind("FATAL:", pos - 1)) {
      auto end = log.find('\n', pos);
      std::string line = log.substr(pos + 7, end == std::string::npos ? std::string::npos : end - pos - 7);
      if (line.find("the database system is") == std::string::npos) return line;
    }
    return "";
  }

  void StartAndWaitForPromotion() {
    if (!server_.Running()) {
      Event("info", Fast() ? "starting the server on the parked target (nothing to replay)"
                           : "starting the server to recover to the restore point");
      try {
        server_.Start({}, std::chrono::seconds(config_.job_timeout_s));
      } catch (const std::exception& e) {
        std::string fatal = LastFatalLine();
        throw RecoveryFailed("recovery failed: " + (fatal.empty() ? std::string(e.what()) : fatal));
      }
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(config_.job_timeout_s);
    while (true) {
      if (!server_.Running()) {
        std::string fatal = LastFatalLine();
        throw RecoveryFailed("recovery failed: " +
                             (fatal.empty() ? std::string("the server exited") : fatal));
      }
      try {
        PgConn conn(config_.ConnInfo("safe-upgrade-agent rollback"), std::chrono::seconds(5));
        if (conn.Exec("SELECT pg_is_in_recovery()::text").Scalar() == "false") break;
      } catch (const PgError&) {
        // still starting or replaying
      }
      if (std::chrono::steady_clock::now() > deadline)
        throw RecoveryFailed("recovery did not finish in time");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (rc_.contains("downtime_started") && !rc_.contains("downtime_s"))
      rc_["downtime_s"] = EpochSeconds() - rc_["downtime_started"].get<double>();
    Event("info",
          "the server reached the restore point and was promoted" +
              (rc_.contains("downtime_s")
                   ? " (down for " + std::to_string(rc_["downtime_s"].get<double>()).substr(0, 5) + " s)"
                   : std::string()),
          {{"path", PathName()}, {"downtime_s", rc_.value("downtime_s", -1.0)}});
  }

  void VerifyRestored() {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
    auto r = conn->Exec(
        "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text");
    const auto& row = r.rows.at(0);
    std::string sysid = row[0].value_or("");
    int timeline = std::stoi(row[1].value_or("0"));
    json facts = {{"system_identifier", sysid}, {"timeline", timeline}, {"extversions", json::object()}};
    if (sysid != rc_["system_identifier"].get<std::string>())
      throw RecoveryFailed("the restored cluster has system identifier " + sysid + ", expected " +
                           rc_["system_identifier"].get<std::string>());
    if (timeline <= rc_["timeline_before"].get<int>())
      throw RecoveryFailed("the restored cluster is on timeline " + std::to_string(timeline) +
                           ", expected a new timeline after " +
                           std::to_string(rc_["timeline_before"].get<int>()));
    const std::string extname = rc_["extname"].get<std::string>();
    std::string versions;
    for (const auto& db : rc_.value("databases", json::array())) {
      const std::string datname = db["datname"].get<std::string>(),
                        expected = db["from_version"].get<std::string>();
      std::string version =
          InstalledVersion(*ConnectProduction(config_, "safe-upgrade-agent rollback", datname), extname);
      facts["extversions"][datname] = version;
      if (version != expected)
        throw RecoveryFailed("after recovery " + extname + " is at " +
                             (version.empty() ? "(not installed)" : version) + " in database " + datname +
                             ", expected " + expected);
      versions += (versions.empty() ? "" : ", ") + version + " in " + datname;
    }
    rc_["timeline_after"] = timeline;
    Event("info",
          "verified: same system identifier, new timeline " + std::to_string(timeline) + ", " + extname +
              " back at " + versions,
          facts);
  }

  void RemoveRecoverySettings() {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
    // ALTER SYSTEM rewrites postgresql.auto.conf without our lines; a later recovery must not
    // inherit them.
    for (const auto& name : RecoverySettingNames()) conn->Exec("ALTER SYSTEM RESET " + name);
    conn->Exec("SELECT pg_reload_conf()");
  }

  // Writes state, events, restore point and data-loss window into the catalog of the running
  // server (the restored one, or the original after a failed recovery).
  void WriteOutcome(const std::string& state, const std::string& error) {
    auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
    conn->ExecScript("BEGIN");
    try {
      std::string id = std::to_string(id_);
      for (const auto& e : rc_.value("catalog_events", json::array()))
        conn->Exec(
            "INSERT INTO safe_upgrade.events (id, upgrade_id, at, phase, level, message, detail) "
            "VALUES ($1::bigint, $2::bigint, $3::timestamptz, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO "
            "NOTHING",
            {e["id"].get<std::string>(), id, e["at"].get<std::string>(), e["phase"].get<std::string>(),
             e["level"].get<std::string>(), e["message"].get<std::string>(), e["detail"].dump()});
      conn->Exec(
          "SELECT setval('safe_upgrade.events_id_seq', greatest((SELECT max(id) FROM safe_upgrade.events), "
          "(SELECT last_value FROM safe_upgrade.events_id_seq)))");
      const auto& rp = rc_["restore_point"];
      conn->Exec(
          "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, xid, backup_stop_lsn, "
          "wal_segment, created_at) VALUES ($1::bigint, $2, $3::pg_lsn, $4::int, nullif($5, '')::xid8, "
          "nullif($6, '')::pg_lsn, $7, coalesce(nullif($8, '')::timestamptz, now())) ON CONFLICT "
          "(upgrade_id) DO NOTHING",
          {id, rp["name"].get<std::string>(), rp["lsn"].get<std::string>(),
           std::to_string(rp["timeline"].get<int>()), rp["xid"].get<std::string>(),
           rp["backup_stop_lsn"].get<std::string>(), rp["wal_segment"].get<std::string>(),
           rc_["window"].value("restore_point_created_at", "")});
      for (const auto& e : rc_["events"])
        conn->Exec(
            "INSERT INTO safe_upgrade.events (upgrade_id, at, phase, level, message, detail) "
            "VALUES ($1::bigint, $2::timestamptz, $3, $4, $5, $6::jsonb)",
            {id, e["at"].get<std::string>(), e["phase"].get<std::string>(), e["level"].get<std::string>(),
             e["message"].get<std::string>(), e["detail"].dump()});
      json report = rc_.value("report", json::object());
      report["rollback"] = {{"state", state},
                            {"data_loss_window", rc_.value("window", json::object())},
                            {"timeline_after", rc_.value("timeline_after", 0)},
                            {"failed_data_directory", AsideDir()},
                            {"failed_restore", rc_.value("failed_restore", "")},
                            {"set_aside", rc_.value("set_aside", json::array())},
                            {"path", PathName()},
                            {"downtime_s", rc_.value("downtime_s", -1.0)}};
      if (!error.empty()) report["rollback"]["error"] = error;
      std::string message =
          state == "rolled_back"
              ? "rolled back to restore point " + rp["name"].get<std::string>() + "; " +
                    rc_["extname"].get<std::string>() + " is at " + rc_["from_version"].get<std::string>() +
                    " again"
              : "rollback failed: " + error + "; the original data directory is running again";
      conn->Exec(
          "INSERT INTO safe_upgrade.events (upgrade_id, phase, level, message, detail) "
          "VALUES ($1::bigint, $2, $3, $4, $5::jsonb)",
          {id, state, state == "rolled_back" ? "info" : "error", message, report["rollback"].dump()});
      conn->Exec(
          "UPDATE safe_upgrade.upgrades SET state = $2, report = $3::jsonb, updated_at = now(), agent_job = "
          "NULL, "
          "error = CASE WHEN $4 = '' THEN error ELSE $4 END WHERE id = $1::bigint",
          {id, state, report.dump(), error});
      // Each database's results as they were before the recovery rewound them; rolled back, every
      // one of them is where the restore point left it.
      for (const auto& db : rc_.value("catalog_databases", json::array()))
        conn->Exec(
            "UPDATE safe_upgrade.upgrade_databases SET report = $3::jsonb, error = $5, "
            "outcome = CASE WHEN $6 = 'rolled_back' THEN 'rolled_back' ELSE $4 END "
            "WHERE upgrade_id = $1::bigint AND datname = $2",
            {id, db["datname"].get<std::string>(), db["report"].dump(), db["outcome"].get<std::string>(),
             db["error"].is_string() ? std::optional<std::string>(db["error"].get<std::string>())
                                     : std::nullopt,
             state});
      conn->ExecScript("COMMIT");
    } catch (...) {
      try {
        conn->ExecScript("ROLLBACK");
      } catch (...) {
      }
      throw;
    }
  }

  void Finish(const std::string& status) {
    Journal(RollbackSteps().back(), status);
    ctx_.journal().Update(id_, [&](json& doc) {
      doc["rollback"] = status;
      doc.erase("rollback_putting_back");
    });
  }

  // Something failed after the stop (recovery did not reach the restore point, a copy, a rename
  // or a start failed): keep whatever was put in place aside, put the original data directory
  // back and start it, so the service is up, then record rollback_failed. Journaled first, so an
  // agent restarted in the middle finishes this, and never runs the rollback's steps again.
  json PutOriginalBack(const std::string& reason) {
    ctx_.journal().Update(id_, [&](json& doc) {
      doc["rollback_putting_back"] = reason;
      doc["rollback_context"] = rc_;
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
      Finish("rollback_failed");
      throw JobFailure(message, {{"state", "rollback_failed"}, {"stage", "put_back"}});
    }
    Event("info",
          "the original data directory is running again" +
              (failed_restore.empty() ? std::string() : "; the failed restore is kept in " + failed_restore),
          {{"failed_restore", failed_restore}});
    rc_["failed_restore"] = failed_restore;
    WriteOutcome("rollback_failed", reason);
    Finish("rollback_failed");
    // The target's scratch and journal entry go (a swapped-in target is production now).
    ReleaseRollbackTarget(ctx_, "rolling_back", "the rollback is over");
    throw JobFailure(reason, {{"state", "rollback_failed"}, {"stage", "recovery"}});
  }

  // Returns where the failed restore was set aside ("" when none was in place).
  std::string RestoreOriginal() {
    // Ours once the move-aside step ran (or began: the original gone from its place); before
    // that a directory under that name would be someone else's, and the original never moved.
    bool original_aside =
        PathExists(AsideDir()) && (step_ >= StepIndex("moved_aside") || !PathExists(config_.data_directory));
    std::string failed_restore;
    if (original_aside) {
      if (server_.Running()) server_.Stop("immediate", std::chrono::seconds(60));
      if (PathExists(config_.data_directory)) {
        if (PathExists(FailedRestoreDir()))
          throw std::runtime_error("both " + config_.data_directory + " and " + FailedRestoreDir() +
                                   " exist");
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

  JobContext& ctx_;
  const AgentConfig& config_;
  int64_t id_;
  ServerControl server_;
  json rc_ = json::object();
  int step_ = -1;
  std::string running_;  // the step being run, for the reason of a failure
};

}  // namespace

const std::vector<std::string>& RollbackSteps() {
  static const std::vector<std::string> steps = {
      "prechecked", "target_checked", "window_recorded", "stopped",          "moved_aside",     "restored",
      "configured", "promoted",       "verified",        "settings_removed", "outcome_written", "done"};
  return steps;
}

nlohmann::json RunRollbackJob(JobContext& ctx) { return Rollback(ctx).Run(); }

}  // namespace safe_upgrade
