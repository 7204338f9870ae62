// Health checks after an upgrade, on the connection given (the clone in a dry run, a fresh
// production connection in verify): the built-in ones (extension_checks.h: version, functions and
// their libraries, PostGIS's own report; dependent_checks.h: the user objects that depend on the
// extension), then the user's checks from safe_upgrade.health_checks (user_checks.h), each under
// its own timeout.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checks/check_result.h"
#include "postgres/catalog.h"
#include "postgres/dependency_rows.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct HealthCheckInput {
  std::string extname;
  std::string target_version;
  // The extensions upgraded with it (UpgradeDatabase::family): each must be at target_version too.
  std::vector<std::string> family;
  std::vector<HealthCheckRecord> user_checks;
  // The dependency rows from before the upgrade (objects that must still exist and work).
  nlohmann::json dependency_before = nlohmann::json::array();
  // Upper bound for one built-in check statement.
  std::string builtin_timeout = "60s";
};

// Runs every check; never throws for a failing check (ok=false), only when the connection is
// lost (PgError with a class 08 SQLSTATE), so that callers can tell a broken server from a
// broken upgrade. on_result is called as each check finishes.
std::vector<CheckResult> RunHealthChecks(PgConn& conn, const HealthCheckInput& input,
                                         const std::function<void(const CheckResult&)>& on_result = {});

// RunHealthChecks in database datname of an upgrade that covers several: each result is tagged
// with the database, and reported as it finishes as "database D: check "N" passed|failed: ...".
using CheckReporter =
    std::function<void(const std::string& level, const std::string& message, const nlohmann::json& detail)>;
std::vector<CheckResult> RunHealthChecksInDatabase(PgConn& conn, const HealthCheckInput& input,
                                                   const std::string& datname, const CheckReporter& report);

}  // namespace safe_upgrade
