// The built-in checks of the extension itself after an upgrade: it is at the target version, its
// C libraries load, its functions resolve and pass their language's validator, and (for the
// PostGIS family) PostGIS's own report finds no problem.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "checks/check_result.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

CheckResult CheckVersion(PgConn& conn, const std::string& extname, const std::string& target_version);
// CheckVersion for each member of the upgrade's family (the extensions upgraded with it), each
// named "extension_version of <member>".
std::vector<CheckResult> CheckFamilyVersions(PgConn& conn, const std::vector<std::string>& family,
                                             const std::string& target_version);
std::vector<CheckResult> CheckFunctions(PgConn& conn, const std::string& extname);
// Only for the PostGIS family, when postgis is installed: postgis_full_version() reports nothing
// to upgrade, and every PostGIS extension of the family upgraded with it (postgis_raster,
// postgis_topology, ...) is at postgis's version (PostGIS's own report does not notice a member
// left at 3.3.2 next to a postgis at 3.3.2next, whose scripts share one release). A member that was
// at another version before the upgrade is not in the family: plan() warned about it, and it does
// not fail the check.
std::optional<CheckResult> CheckPostgis(PgConn& conn, const std::string& extname,
                                        const std::vector<std::string>& family);

// Runs the validator PostgreSQL itself runs at CREATE FUNCTION on function oid of language; a
// failure is a string, a lost connection an exception. Languages without one pass.
std::optional<std::string> ValidateFunction(PgConn& conn, const std::string& oid,
                                            const std::string& language);

}  // namespace safe_upgrade
