// The built-in checks of the user objects that depend on the extension: every one recorded before
// the upgrade still exists, and each works (views plan, columns read, indexes are valid, functions
// validate), run as the object's owner.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checks/check_result.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

// dependency_before: the rows recorded before the upgrade (postgres/dependency_rows.h).
std::vector<CheckResult> CheckDependents(PgConn& conn, const std::string& extname,
                                         const nlohmann::json& dependency_before);

}  // namespace safe_upgrade
