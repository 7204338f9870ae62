// The verify job: the health checks on production after the apply, on a fresh connection (a new
// backend loads the new library). A failing check is the upgrade's fault (detail
// {"checks_failed": true}, which makes the worker roll back); an unreachable server is not (no
// checks_failed, so the worker tries again).
#include "catalog.h"
#include "health_checks.h"
#include "jobs.h"
#include "rollback_target.h"

namespace safe_upgrade {

nlohmann::json RunVerifyJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t id = ctx.upgrade_id();
  auto started = std::chrono::steady_clock::now();
  std::unique_ptr<PgConn> conn;
  try {
    conn = ConnectProduction(config, "safe-upgrade-agent verify");
  } catch (const PgError& e) {
    throw std::runtime_error("production is not reachable for verification: " + e.Full());
  }

  std::vector<CheckResult> results;
  HealthCheckInput input;
  try {
    UpgradeRecord upgrade = LoadUpgrade(*conn, id);
    input.extname = upgrade.extname;
    input.target_version = upgrade.to_version;
    input.user_checks = LoadHealthChecks(*conn, upgrade.extname);
    input.dependency_before = RecordedDependencyRows(*conn, id, "before");
    ctx.Info("verifying", "running " + std::to_string(input.user_checks.size()) +
                              " user check(s) and the built-in "
                              "checks on production (backend pid " +
                              std::to_string(conn->BackendPid()) + ")");
    results = RunHealthChecks(*conn, input, [&](const CheckResult& c) {
      ctx.Event("verifying", c.ok ? "info" : "error",
                "check \"" + c.name + "\" " + (c.ok ? "passed" : "failed") +
                    (c.message.empty() ? "" : ": " + c.message),
                c.ToJson());
    });
  } catch (const PgError& e) {
    // Only lost connections reach here (a failing check is a result, not an exception).
    throw std::runtime_error("verification could not run on production: " + e.Full());
  }

  auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  nlohmann::json result = {{"checks", ChecksToJson(results)}, {"duration_ms", elapsed.count()}};
  if (const CheckResult* bad = FirstFailure(results)) {
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& c : results)
      if (!c.ok) failed.push_back(c.name);
    result["checks_failed"] = true;
    result["failed"] = failed;
    throw JobFailure("health check \"" + bad->name + "\" failed on production: " + bad->message, result);
  }
  ctx.Info("verifying", "all " + std::to_string(results.size()) + " checks passed on production");
  // Succeeded: the upgrade stays, so its parked rollback target only holds disk now.
  ReleaseRollbackTarget(ctx, "verifying", "the upgrade succeeded");
  return result;
}

}  // namespace safe_upgrade
