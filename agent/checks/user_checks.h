// The user's health checks (safe_upgrade.health_checks): each one query, run as the role that
// added it, in a transaction that is rolled back, under its own timeout; it passes when it
// returns true.
#pragma once

#include "checks/check_result.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

// Never throws for a failing check (ok=false), only when the connection is lost.
CheckResult RunUserCheck(PgConn& conn, const HealthCheckRecord& check);

}  // namespace safe_upgrade
