// Upgrade runner: ALTER EXTENSION hop by hop in one transaction, with the lock profile.
#include "postgres/upgrade_runner.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace safe_upgrade {
namespace {

int64_t ElapsedMs(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since)
      .count();
}

// Runs one statement asynchronously so that the caller can look around while it waits.
void RunWatched(PgConn& conn, const std::string& sql, const UpgradeRunOptions& options) {
  auto started = std::chrono::steady_clock::now();
  conn.SendQuery(sql);
  while (!conn.PollResult(options.poll_interval)) {
    if (options.while_running) options.while_running(std::chrono::milliseconds(ElapsedMs(started)));
  }
}

bool ConnectionLost(const PgError& e, PgConn& conn) {
  return !conn.Ok() || e.sqlstate().rfind("08", 0) == 0 || e.sqlstate() == "57P01";
}

void RollbackQuietly(PgConn& conn) {
  if (!conn.Ok()) return;
  try {
    conn.ExecScript("ROLLBACK");
  } catch (const PgError&) {
  }
}

}  // namespace

std::vector<Hop> PlanHops(const std::vector<std::string>& update_path, const std::string& to_version,
                          const std::string& current_version) {
  std::vector<std::string> versions = update_path;
  auto here = std::find(versions.begin(), versions.end(), current_version);
  if (here != versions.end()) versions.erase(versions.begin(), here + 1);
  if (versions.empty() || versions.back() != to_version) versions.push_back(to_version);
  std::vector<Hop> hops;
  std::string from = current_version;
  for (const auto& to : versions) {
    if (to == from) continue;
    hops.push_back(Hop{from, to, 0});
    from = to;
  }
  return hops;
}

std::vector<ExtensionUpgrade> PlanUpgrade(const std::string& extname, const UpgradeDatabase& db,
                                          const std::string& to_version, const std::string& current_version) {
  std::vector<ExtensionUpgrade> out;
  out.push_back({extname, PlanHops(db.update_path, to_version, current_version)});
  for (const auto& m : db.family)
    out.push_back({m.extname, PlanHops(m.update_path, to_version, m.from_version)});
  for (auto& u : out)
    for (auto& h : u.hops) h.extname = u.extname;
  return out;
}

std::string WithFamily(const UpgradeDatabase& db) {
  std::string out;
  for (const auto& m : db.family) out += (out.empty() ? " with " : ", ") + m.extname;
  return out;
}

size_t HopCount(const std::vector<ExtensionUpgrade>& upgrades) {
  size_t n = 0;
  for (const auto& u : upgrades) n += u.hops.size();
  return n;
}

std::string UpgradeOutcome::FailureMessage() const {
  if (committed) return "";
  std::string why = error ? error->Full() : std::string("unknown error");
  // A family member's hop is named with its extension; the main extension's as before.
  if (failed_hop && !failed_hop->extname.empty() && failed_hop->extname != extname)
    return "hop " + failed_hop->Name() + " of " + failed_hop->extname + " failed: " + why;
  if (failed_hop) return "hop " + failed_hop->Name() + " failed: " + why;
  if (commit_outcome_unknown) return "the connection was lost during COMMIT: " + why;
  return "the upgrade transaction failed: " + why;
}

nlohmann::json UpgradeOutcome::ToJson() const {
  nlohmann::json hops_json = nlohmann::json::array();
  for (const auto& h : hops)
    hops_json.push_back(
        {{"from", h.from}, {"to", h.to}, {"duration_ms", h.duration_ms}, {"extname", h.extname}});
  nlohmann::json out = {{"hops", hops_json}, {"lock_profile", lock_profile}, {"committed", committed}};
  if (failed_hop) {
    nlohmann::json f = {{"from", failed_hop->from},
                        {"to", failed_hop->to},
                        {"duration_ms", failed_hop->duration_ms},
                        {"extname", failed_hop->extname}};
    if (error) {
      f["sqlstate"] = error->sqlstate();
      f["message"] = error->message();
      f["detail"] = error->detail();
      f["hint"] = error->hint();
    }
    out["failed_hop"] = f;
  }
  if (!committed) out["error"] = FailureMessage();
  if (commit_outcome_unknown) out["commit_outcome_unknown"] = true;
  return out;
}

std::string InstalledVersion(PgConn& conn, const std::string& extname) {
  auto r = conn.Exec("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1", {extname});
  return r.rows.empty() ? "" : r.rows[0][0].value_or("");
}

void AppendForDatabase(nlohmann::json& list, const nlohmann::json& items, const std::string& datname) {
  if (!items.is_array()) return;
  for (auto item : items) {
    if (item.is_object()) item["datname"] = datname;
    list.push_back(std::move(item));
  }
}

std::map<std::string, std::string> InstalledVersions(const AgentConfig& config,
                                                     const UpgradeRecord& upgrade) {
  std::map<std::string, std::string> out;
  for (const auto& db : upgrade.databases)
    out[db.datname] = InstalledVersion(*ConnectProduction(config, "safe-upgrade-agent versions", db.datname),
                                       upgrade.extname);
  return out;
}

nlohmann::json CaptureLockProfile(PgConn& conn) {
  // Relations by name, other objects by description; the query's own lock on pg_locks is noise,
  // and so are the transaction's own xid locks, which every writing transaction holds.
  auto r = conn.Exec(
      "SELECT l.locktype, "
      "  CASE WHEN l.locktype IN ('relation', 'page', 'tuple', 'extend') THEN l.relation::regclass::text "
      "       WHEN l.locktype = 'object' THEN coalesce(nullif(pg_catalog.pg_describe_object(l.classid, "
      "l.objid, "
      "            l.objsubid), ''), l.classid::regclass::text || ' ' || l.objid || ' (dropped by the "
      "upgrade)') "
      "       ELSE concat_ws(':', l.database, l.classid, l.objid, l.objsubid) END, "
      "  l.mode, coalesce(l.classid::regclass::text, '') "
      "FROM pg_catalog.pg_locks l "
      "WHERE l.pid = pg_catalog.pg_backend_pid() AND l.granted "
      "  AND l.locktype NOT IN ('virtualxid', 'transactionid') "
      "  AND (l.relation IS NULL OR l.relation <> 'pg_catalog.pg_locks'::regclass) "
      "ORDER BY 1, 4, 3, 2");
  // Object locks (on functions, types, ...) block only DDL on the same objects, and an upgrade of
  // a large extension takes them by the hundred: beyond a few per catalog and mode they are
  // summarised in one entry with a count.
  constexpr size_t kListed = 10;
  std::set<std::tuple<std::string, std::string, std::string>> seen;
  std::map<std::pair<std::string, std::string>, std::vector<std::string>>
      objects;  // (catalog, mode) -> names
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : r.rows) {
    auto key = std::make_tuple(row[0].value_or(""), row[1].value_or(""), row[2].value_or(""));
    if (!seen.insert(key).second) continue;
    if (std::get<0>(key) == "object") {
      objects[{row[3].value_or(""), std::get<2>(key)}].push_back(std::get<1>(key));
      continue;
    }
    out.push_back({{"locktype", std::get<0>(key)}, {"object", std::get<1>(key)}, {"mode", std::get<2>(key)}});
  }
  for (const auto& [group, names] : objects) {
    if (names.size() <= kListed) {
      for (const auto& n : names)
        out.push_back({{"locktype", "object"}, {"object", n}, {"mode", group.second}});
      continue;
    }
    std::string examples;
    for (size_t i = 0; i < 3; ++i) examples += (i ? ", " : "") + names[i];
    out.push_back(
        {{"locktype", "object"},
         {"object", std::to_string(names.size()) + " objects in " + group.first + " (" + examples + ", ...)"},
         {"mode", group.second},
         {"count", names.size()}});
  }
  return out;
}

UpgradeOutcome RunUpgrade(PgConn& conn, const std::vector<ExtensionUpgrade>& upgrades,
                          const UpgradeRunOptions& options) {
  UpgradeOutcome outcome;
  if (!upgrades.empty()) outcome.extname = upgrades.front().extname;
  // set_config(..., true) is SET LOCAL with bind parameters: the timeouts end with the transaction.
  conn.ExecScript("BEGIN");
  try {
    conn.Exec(
        "SELECT pg_catalog.set_config('lock_timeout', $1, true), pg_catalog.set_config('statement_timeout', "
        "$2, true)",
        {options.lock_timeout, options.statement_timeout});
  } catch (const PgError& e) {
    RollbackQuietly(conn);
    outcome.error = e;
    return outcome;
  }
  for (const auto& upgrade : upgrades) {
    const std::string ident = conn.QuoteIdent(upgrade.extname);
    for (const auto& planned : upgrade.hops) {
      Hop hop = planned;
      hop.extname = upgrade.extname;
      auto started = std::chrono::steady_clock::now();
      try {
        RunWatched(conn, "ALTER EXTENSION " + ident + " UPDATE TO " + conn.QuoteLiteral(hop.to), options);
      } catch (const PgError& e) {
        hop.duration_ms = ElapsedMs(started);
        outcome.failed_hop = hop;
        outcome.error = e;
        RollbackQuietly(conn);
        return outcome;
      }
      hop.duration_ms = ElapsedMs(started);
      outcome.hops.push_back(hop);
      if (options.on_hop) options.on_hop(hop);
    }
  }
  try {
    outcome.lock_profile = CaptureLockProfile(conn);
  } catch (const PgError& e) {
    outcome.error = e;
    RollbackQuietly(conn);
    return outcome;
  }
  try {
    conn.ExecScript("COMMIT");
    outcome.committed = true;
  } catch (const PgError& e) {
    outcome.error = e;
    outcome.commit_outcome_unknown = ConnectionLost(e, conn);
  }
  return outcome;
}

}  // namespace safe_upgrade
