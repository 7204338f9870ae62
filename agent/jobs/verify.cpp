// The verify job: the health checks on production after the apply, in each database of the
// upgrade, on fresh connections (a new backend loads the new library). A failing check in any
// database is the upgrade's fault (kChecksFailed, which makes the worker roll the cluster back; the
// result also says {"checks_failed": true}); an unreachable server is not (kCouldNotRun, so the
// worker tries again).
#include <algorithm>
#include <chrono>

#include "checks/health_checks.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/pgbackrest.h"
#include "postgres/upgrade_runner.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

// After a success with the pgbackrest backend, a fresh backup of the upgraded cluster, so that a
// later disaster recovery starts after the upgrade instead of replaying through it. The upgrade
// has succeeded either way: a failed backup is a warning, not a failure.
nlohmann::json TakePostUpgradeBackup(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  auto started = std::chrono::steady_clock::now();
  try {
    PgBackRestBackup b =
        PgBackRest(config).Backup(config.backend.backup_type, config.backup_checkpoint == "fast",
                                  std::chrono::seconds(std::max(60, config.job_timeout_s)));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ctx.Info("verifying",
             "took pgBackRest backup " + b.label + " (" + b.type + ") of the upgraded cluster in " +
                 std::to_string(seconds).substr(0, 5) + " s, so a later recovery need not replay the upgrade",
             b.ToJson());
    nlohmann::json out = b.ToJson();
    out["seconds"] = seconds;
    return out;
  } catch (const std::exception& e) {
    ctx.Event("verifying", "warning",
              std::string("the upgrade succeeded, but the backup after it failed: ") + e.what() +
                  "; take one with pgbackrest backup before relying on the stanza for a recovery");
    return {{"error", e.what()}};
  }
}

}  // namespace

nlohmann::json RunVerifyJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t id = ctx.upgrade_id();
  auto started = std::chrono::steady_clock::now();
  std::unique_ptr<PgConn> control;
  try {
    control = ConnectProduction(config, "safe-upgrade-agent verify");
  } catch (const PgError& e) {
    throw JobFailure("production is not reachable for verification: " + e.Full(), nlohmann::json::object(),
                     JobFailureKind::kCouldNotRun);
  }

  std::vector<CheckResult> results;
  nlohmann::json databases = nlohmann::json::array();
  try {
    UpgradeRecord upgrade = LoadUpgrade(*control, id);
    for (const auto& db : upgrade.databases) {
      HealthCheckInput input;
      input.extname = upgrade.extname;
      input.target_version = upgrade.to_version;
      input.user_checks = LoadHealthChecks(*control, upgrade, db);
      input.dependency_before = RecordedDependencyRows(*control, id, "before", db.datname);
      input.family = db.FamilyNames();
      auto conn = ConnectProduction(config, "safe-upgrade-agent verify", db.datname);
      ctx.Info("verifying", "running " + std::to_string(input.user_checks.size()) +
                                " user check(s) and the built-in checks in database " + db.datname +
                                WithFamily(db) + " (backend pid " + std::to_string(conn->BackendPid()) + ")");
      auto here = RunHealthChecksInDatabase(
          *conn, input, db.datname,
          [&](const std::string& level, const std::string& message, const nlohmann::json& detail) {
            ctx.Event("verifying", level, message, detail);
          });
      nlohmann::json family = nlohmann::json::object();
      for (const auto& m : db.family) family[m.extname] = InstalledVersion(*conn, m.extname);
      databases.push_back({{"datname", db.datname},
                           {"checks", ChecksToJson(here)},
                           {"extversion", InstalledVersion(*conn, upgrade.extname)},
                           {"family", family}});
      results.insert(results.end(), here.begin(), here.end());
    }
  } catch (const PgError& e) {
    // Only lost connections reach here (a failing check is a result, not an exception).
    throw JobFailure("verification could not run on production: " + e.Full(), nlohmann::json::object(),
                     JobFailureKind::kCouldNotRun);
  }

  auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  nlohmann::json result = {
      {"checks", ChecksToJson(results)}, {"databases", databases}, {"duration_ms", elapsed.count()}};
  if (const CheckResult* bad = FirstFailure(results)) {
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& c : results)
      if (!c.ok) failed.push_back(c.name);
    result["checks_failed"] = true;
    result["failed"] = failed;
    throw JobFailure("health check \"" + bad->name + "\" failed on production in database " + bad->datname +
                         ": " + bad->message,
                     result, JobFailureKind::kChecksFailed);
  }
  ctx.Info("verifying", "all " + std::to_string(results.size()) + " checks passed on production in " +
                            std::to_string(databases.size()) + " database(s)");
  // Succeeded: the upgrade stays, so its parked rollback target only holds disk now.
  ReleaseRollbackTarget(ctx, "verifying", "the upgrade succeeded");
  if (config.backend.IsPgBackRest() && config.backend.backup_after_success)
    result["post_upgrade_backup"] = TakePostUpgradeBackup(ctx);
  return result;
}

}  // namespace safe_upgrade
