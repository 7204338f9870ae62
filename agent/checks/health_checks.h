// Health checks after an upgrade, on the connection given (the clone in a dry run, a fresh
// production connection in verify): the built-in ones (version, functions and their libraries,
// the user objects that depend on the extension, PostGIS's own report) and the user's checks from
// safe_upgrade.health_checks, each under its own timeout.
//
// Also the dependency rows (user objects that depend on the extension's objects) that the dry run
// records and compares ("drift").
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct CheckResult {
  std::string name;
  std::string kind;  // "builtin" or "user"
  bool ok = false;
  std::string message;
  int64_t duration_ms = 0;
  std::string datname;  // the database it ran in, when the upgrade covers several
  nlohmann::json ToJson() const;
};

struct HealthCheckInput {
  std::string extname;
  std::string target_version;
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

// Runs one user check: passes when it runs without error within its timeout and returns true.
CheckResult RunUserCheck(PgConn& conn, const HealthCheckRecord& check);

nlohmann::json ChecksToJson(const std::vector<CheckResult>& checks);
// The first failing check, or nullptr.
const CheckResult* FirstFailure(const std::vector<CheckResult>& checks);

// User objects that depend on the extension's objects, as rows
// {object_type, object_schema, object_identity, depends_on_type, depends_on_identity, deptype}.
// The query is the one plan() and begin() run (core/catalog_queries.h).
nlohmann::json DependencyRows(PgConn& conn, const std::string& extname);
// The rows recorded for the upgrade in database datname (empty when none).
nlohmann::json RecordedDependencyRows(PgConn& conn, int64_t upgrade_id, const std::string& phase,
                                      const std::string& datname);

// Differences between two sets of dependency rows: {added: [rows], removed: [rows],
// changed: [{object_type, object_identity, before: [...], after: [...]}]}.
nlohmann::json DependencyDrift(const nlohmann::json& before, const nlohmann::json& after);

// True for SQLSTATEs that mean the server or the connection is gone, not that a check failed.
bool IsConnectionError(const PgError& e);

}  // namespace safe_upgrade
