// The rollback's recovery: the recovery settings written into the restored copy, the server
// started and waited for until promoted at the restore point, the result verified (same cluster,
// new timeline, the old version in every database), and the settings removed again.
#include <unistd.h>

#include <chrono>
#include <thread>

#include "base/fs_util.h"
#include "jobs/jobs.h"
#include "jobs/rollback_run.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"
#include "postgres/recovery_settings.h"
#include "postgres/upgrade_runner.h"

namespace safe_upgrade {

using nlohmann::json;

void RollbackRun::WriteRecoverySettings() {
  const JournaledRestorePoint& rp = rc_.restore_point;
  if (Fast()) {
    Event("info", "no recovery to configure: the parked target was promoted at restore point " + rp.name +
                      " before the rollback, so the server starts as after a clean shutdown");
    return;
  }
  WriteRecoveryBlock(config_, config_.data_directory, {rp.name, rp.timeline, "promote"});
  std::string standby = JoinPath(config_.data_directory, "standby.signal");
  if (PathExists(standby)) unlink(standby.c_str());
  AtomicWriteFile(JoinPath(config_.data_directory, "recovery.signal"), "", 0600);
  Event("info", "recovery configured: target restore point " + rp.name + " on timeline " +
                    std::to_string(rp.timeline));
}

// The server's own reason for ending recovery: the last FATAL line that is not a client being
// turned away while the server starts or stops.
std::string RollbackRun::LastFatalLine() const {
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

void RollbackRun::StartAndWaitForPromotion() {
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
      throw RecoveryFailed("recovery failed: " + (fatal.empty() ? std::string("the server exited") : fatal));
    }
    try {
      PgConn conn(config_.ConnInfo("safe-upgrade-agent rollback"), std::chrono::seconds(5));
      if (conn.Exec("SELECT pg_is_in_recovery()::text").Scalar() == "false") break;
    } catch (const PgError&) {
      // still starting or replaying
    }
    if (std::chrono::steady_clock::now() > deadline) throw RecoveryFailed("recovery did not finish in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (rc_.downtime_started && !rc_.downtime_s) rc_.downtime_s = EpochSeconds() - *rc_.downtime_started;
  Event("info",
        "the server reached the restore point and was promoted" +
            (rc_.downtime_s ? " (down for " + std::to_string(*rc_.downtime_s).substr(0, 5) + " s)"
                            : std::string()),
        {{"path", PathName()}, {"downtime_s", rc_.downtime_s.value_or(-1.0)}});
}

void RollbackRun::VerifyRestored() {
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  auto r = conn->Exec(
      "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
      "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text");
  const auto& row = r.rows.at(0);
  std::string sysid = row[0].value_or("");
  int timeline = std::stoi(row[1].value_or("0"));
  json facts = {{"system_identifier", sysid}, {"timeline", timeline}, {"extversions", json::object()}};
  if (sysid != rc_.system_identifier)
    throw RecoveryFailed("the restored cluster has system identifier " + sysid + ", expected " +
                         rc_.system_identifier);
  const int timeline_before = rc_.timeline_before.value();
  if (timeline <= timeline_before)
    throw RecoveryFailed("the restored cluster is on timeline " + std::to_string(timeline) +
                         ", expected a new timeline after " + std::to_string(timeline_before));
  const std::string& extname = rc_.extname;
  std::string versions;
  for (const auto& db : rc_.databases) {
    std::string version =
        InstalledVersion(*ConnectProduction(config_, "safe-upgrade-agent rollback", db.datname), extname);
    facts["extversions"][db.datname] = version;
    if (version != db.from_version)
      throw RecoveryFailed("after recovery " + extname + " is at " +
                           (version.empty() ? "(not installed)" : version) + " in database " + db.datname +
                           ", expected " + db.from_version);
    versions += (versions.empty() ? "" : ", ") + version + " in " + db.datname;
  }
  rc_.timeline_after = timeline;
  Event("info",
        "verified: same system identifier, new timeline " + std::to_string(timeline) + ", " + extname +
            " back at " + versions,
        facts);
}

void RollbackRun::RemoveRecoverySettings() {
  auto conn = ConnectProduction(config_, "safe-upgrade-agent rollback");
  // ALTER SYSTEM rewrites postgresql.auto.conf without our lines; a later recovery must not
  // inherit them.
  for (const auto& name : RecoverySettingNames()) conn->Exec("ALTER SYSTEM RESET " + name);
  conn->Exec("SELECT pg_reload_conf()");
}

}  // namespace safe_upgrade
