// Health checks: the built-in ones, then the user's (see health_checks.h).
#include "checks/health_checks.h"

#include "checks/dependent_checks.h"
#include "checks/extension_checks.h"
#include "checks/run_as.h"
#include "checks/user_checks.h"

namespace safe_upgrade {

using nlohmann::json;

std::vector<CheckResult> RunHealthChecks(PgConn& conn, const HealthCheckInput& in,
                                         const std::function<void(const CheckResult&)>& on_result) {
  std::vector<CheckResult> results;
  auto add = [&](CheckResult c) {
    if (on_result) on_result(c);
    results.push_back(std::move(c));
  };
  {
    // Built-in checks read catalogs and plan queries; bound them so a broken server cannot hang us.
    std::string ms =
        conn.Exec("SELECT (extract(epoch FROM $1::interval) * 1000)::bigint::text", {in.builtin_timeout})
            .Scalar();
    ScopedSetting timeout(conn, "statement_timeout", ms);
    // A lock held by someone else on production is not the upgrade's fault; do not wait long for it.
    ScopedSetting lock_timeout(conn, "lock_timeout", "5s");
    add(CheckVersion(conn, in.extname, in.target_version));
    for (auto& c : CheckFamilyVersions(conn, in.family, in.target_version)) add(std::move(c));
    for (auto& c : CheckFunctions(conn, in.extname)) add(std::move(c));
    // The members' functions too, each check named after its extension.
    for (const auto& member : in.family)
      for (auto& c : CheckFunctions(conn, member)) {
        c.name += " (" + member + ")";
        add(std::move(c));
      }
    for (auto& c : CheckDependents(conn, in.extname, in.dependency_before)) add(std::move(c));
    if (auto c = CheckPostgis(conn, in.extname, in.family)) add(std::move(*c));
  }
  for (const auto& check : in.user_checks) add(RunUserCheck(conn, check));
  return results;
}

std::vector<CheckResult> RunHealthChecksInDatabase(PgConn& conn, const HealthCheckInput& input,
                                                   const std::string& datname, const CheckReporter& report) {
  auto results = RunHealthChecks(conn, input, [&](const CheckResult& c) {
    json detail = c.ToJson();
    detail["datname"] = datname;
    report(c.ok ? "info" : "error",
           "database " + datname + ": check \"" + c.name + "\" " + (c.ok ? "passed" : "failed") +
               (c.message.empty() ? "" : ": " + c.message),
           detail);
  });
  for (auto& c : results) c.datname = datname;
  return results;
}

}  // namespace safe_upgrade
