// The sessions an upgrade leaves on old code: the server's processes that map a replaced copy of
// one of the upgraded extensions' libraries (checks/stale_libraries.h), described as
// pg_stat_activity shows them, and the recycle_sessions option that ends them after a successful
// apply (none, idle or all; only client backends are ever terminated).
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/job.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

// The shared libraries of the extensions in conn's database: the probin of their C functions.
std::set<std::string> ExtensionLibraries(PgConn& conn, const std::vector<std::string>& extnames);

// The server's processes that map an old copy of one of the libraries: [{pid, backend_type,
// datname, usename, application_name, state, backend_start, libraries: [{library, reason}]}] in pid
// order. The
// postmaster is listed with backend_type "postmaster": a library it preloaded stays old in every
// new backend until the server restarts.
nlohmann::json StaleSessions(const AgentConfig& config, PgConn& conn, const std::set<std::string>& libraries);

// "pid 123 (client backend, database app, user u, idle), ..." for events.
std::string DescribeStaleSessions(const nlohmann::json& sessions);

// Ends the stale client backends of the upgraded databases that mode ("idle": state idle; "all":
// any state) covers, with pg_terminate_backend on conn, each checked again as it is ended (same
// backend_start, still idle). Returns {mode, count, terminated: [pid], kept: [{pid, reason}]}.
nlohmann::json RecycleSessions(PgConn& conn, const nlohmann::json& sessions, const std::string& mode,
                               const std::set<std::string>& databases);

// The apply's look at them, before it (after_apply false) or after it committed everywhere: the
// sessions on an old copy of the libraries of the upgrade's extensions in any of its databases
// (conns: one connection per database, in upgrade.databases order), named in an event when there
// are any. After the apply the sessions that recycle_sessions covers are ended. Returns
// {sessions, libraries} (after the apply also recycled: RecycleSessions' result). Never throws: a
// look that fails is a warning event, and the apply goes on.
nlohmann::json LookAtStaleSessions(JobContext& ctx, const UpgradeRecord& upgrade,
                                   const std::vector<std::unique_ptr<PgConn>>& conns, bool after_apply);

}  // namespace safe_upgrade
