// The verify job: the health checks on production after the apply, in each database of the
// upgrade, on fresh connections (a new backend loads the new library). A failing check in any
// database is the upgrade's fault (kChecksFailed, which makes the worker roll the cluster back; the
// result also says {"checks_failed": true}); an unreachable server is not (kCouldNotRun, so the
// worker tries again).
#include "checks/health_checks.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/upgrade_runner.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {

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
      input.user_checks = LoadHealthChecks(*control, upgrade.extname, db.datname);
      input.dependency_before = RecordedDependencyRows(*control, id, "before", db.datname);
      auto conn = ConnectProduction(config, "safe-upgrade-agent verify", db.datname);
      ctx.Info("verifying", "running " + std::to_string(input.user_checks.size()) +
                                " user check(s) and the built-in checks in database " + db.datname +
                                " (backend pid " + std::to_string(conn->BackendPid()) + ")");
      auto here = RunHealthChecksInDatabase(
          *conn, input, db.datname,
          [&](const std::string& level, const std::string& message, const nlohmann::json& detail) {
            ctx.Event("verifying", level, message, detail);
          });
      databases.push_back({{"datname", db.datname},
                           {"checks", ChecksToJson(here)},
                           {"extversion", InstalledVersion(*conn, upgrade.extname)}});
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
  return result;
}

}  // namespace safe_upgrade
