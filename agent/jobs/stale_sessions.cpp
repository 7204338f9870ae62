// The sessions left on an old library, and recycling them (see stale_sessions.h).
#include "jobs/stale_sessions.h"

#include <map>

#include "checks/check_result.h"
#include "checks/stale_libraries.h"

namespace safe_upgrade {

using nlohmann::json;

std::set<std::string> ExtensionLibraries(PgConn& conn, const std::vector<std::string>& extnames) {
  auto r = conn.Exec(
      "SELECT DISTINCT p.probin FROM pg_catalog.pg_extension e "
      "JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = e.oid "
      "  AND d.deptype = 'e' AND d.classid = 'pg_catalog.pg_proc'::regclass "
      "JOIN pg_catalog.pg_proc p ON p.oid = d.objid "
      "JOIN pg_catalog.pg_language l ON l.oid = p.prolang AND l.lanname = 'c' "
      "WHERE e.extname::text = ANY ($1::text[]) AND p.probin IS NOT NULL",
      {ArrayLiteral(extnames)});
  std::set<std::string> out;
  for (const auto& row : r.rows)
    if (row[0] && !row[0]->empty()) out.insert(*row[0]);
  return out;
}

json StaleSessions(const AgentConfig& config, PgConn& conn, const std::set<std::string>& libraries) {
  json out = json::array();
  if (libraries.empty()) return out;
  std::vector<int> pids = ServerProcesses(config.data_directory);
  std::map<int, json> by_pid;
  for (const auto& m : FindStaleLibraries(pids)) {
    if (!IsOneOfLibraries(m.path, libraries)) continue;
    auto& s = by_pid[m.pid];
    if (s.is_null()) s = {{"pid", m.pid}, {"libraries", json::array()}};
    // The file's name only: events and reports are readable by every role.
    s["libraries"].push_back({{"library", m.path.substr(m.path.rfind('/') + 1)}, {"reason", m.reason}});
  }
  if (by_pid.empty()) return out;
  std::vector<std::string> pid_texts;
  for (const auto& [pid, s] : by_pid) pid_texts.push_back(std::to_string(pid));
  auto r = conn.Exec(
      "SELECT a.pid::text, coalesce(a.backend_type, ''), coalesce(a.datname::text, ''), "
      "       coalesce(a.usename::text, ''), coalesce(a.application_name, ''), coalesce(a.state, ''), "
      "       coalesce(a.backend_start::text, '') "
      "FROM pg_catalog.pg_stat_activity a WHERE a.pid = ANY ($1::int[])",
      {ArrayLiteral(pid_texts)});
  std::map<int, std::vector<std::string>> activity;
  for (const auto& row : r.rows) {
    std::vector<std::string> fields;
    for (size_t i = 1; i < row.size(); ++i) fields.push_back(row[i].value_or(""));
    activity[std::stoi(*row[0])] = fields;
  }
  const int postmaster = pids.empty() ? 0 : pids.front();
  for (auto& [pid, s] : by_pid) {
    auto it = activity.find(pid);
    std::vector<std::string> f =
        it != activity.end() ? it->second : std::vector<std::string>{"", "", "", "", "", ""};
    if (it == activity.end()) f[0] = pid == postmaster ? "postmaster" : "server process";
    s["backend_type"] = f[0];
    s["datname"] = f[1];
    s["usename"] = f[2];
    s["application_name"] = f[3];
    s["state"] = f[4];
    s["backend_start"] = f[5];  // with the pid, this session and no later one that reuses the pid
    out.push_back(s);
  }
  return out;
}

std::string DescribeStaleSessions(const json& sessions) {
  std::string out;
  for (const auto& s : sessions) {
    std::string what = s.value("backend_type", "");
    for (const auto& [key, label] : {std::pair{"datname", "database "}, {"usename", "user "}, {"state", ""}}) {
      std::string v = s.value(key, "");
      if (!v.empty()) what += std::string(", ") + label + v;
    }
    out += (out.empty() ? "" : "; ") + ("pid " + std::to_string(s.value("pid", 0)) + " (" + what + ")");
  }
  return out;
}

json RecycleSessions(PgConn& conn, const json& sessions, const std::string& mode,
                     const std::set<std::string>& databases) {
  json result = {{"mode", mode}, {"count", 0}, {"terminated", json::array()}, {"kept", json::array()}};
  if (mode != "idle" && mode != "all") return result;
  for (const auto& s : sessions) {
    int pid = s.value("pid", 0);
    std::string reason;
    if (s.value("backend_type", "") != "client backend")
      reason = s.value("backend_type", "") + ": only client backends are terminated";
    else if (!databases.count(s.value("datname", "")))
      reason = "database " + s.value("datname", "") + " is not upgraded: its catalog still matches the old library";
    else if (mode == "idle" && s.value("state", "") != "idle")
      reason = "not idle (" + s.value("state", "") + ")";
    if (reason.empty()) {
      try {
        // Checked again as it is terminated: the same session (not a later one with its pid),
        // still a client backend, and for "idle" still idle.
        auto r = conn.Exec(
            "SELECT pg_catalog.pg_terminate_backend(a.pid, 5000)::text FROM pg_catalog.pg_stat_activity a "
            "WHERE a.pid = $1::int AND a.backend_start::text = $2 AND a.backend_type = 'client backend' "
            "  AND ($3 = 'all' OR a.state = 'idle')",
            {std::to_string(pid), s.value("backend_start", ""), mode});
        if (!r.Empty() && r.Scalar() == "true") {
          result["terminated"].push_back(pid);
          continue;
        }
        reason = r.Empty() ? "it ended, or was no longer idle, when its turn came"
                           : "pg_terminate_backend did not end it within 5 s";
      } catch (const PgError& e) {
        if (IsConnectionError(e)) throw;
        reason = e.message();
      }
    }
    result["kept"].push_back({{"pid", pid}, {"reason", reason}});
  }
  result["count"] = result["terminated"].size();
  return result;
}

json LookAtStaleSessions(JobContext& ctx, const UpgradeRecord& upgrade,
                         const std::vector<std::unique_ptr<PgConn>>& conns, bool after_apply) {
  json out = {{"sessions", json::array()}, {"libraries", json::array()}};
  const std::string mode = upgrade.options.value("recycle_sessions", "none");
  try {
    std::set<std::string> libraries;
    for (size_t i = 0; i < conns.size() && i < upgrade.databases.size(); ++i) {
      std::vector<std::string> extnames = upgrade.databases[i].FamilyNames();
      extnames.insert(extnames.begin(), upgrade.extname);
      auto found = ExtensionLibraries(*conns[i], extnames);
      libraries.insert(found.begin(), found.end());
    }
    for (const auto& l : libraries) out["libraries"].push_back(l);
    if (conns.empty()) return out;
    out["sessions"] = StaleSessions(ctx.config(), *conns.front(), libraries);
    const json& sessions = out["sessions"];
    std::string who = DescribeStaleSessions(sessions);
    std::string count = std::to_string(sessions.size()) + " process(es)";
    if (!after_apply) {
      if (!sessions.empty())
        ctx.Event("applying", "warning",
                  count + " run an old copy of a library of " + upgrade.extname +
                      " that was replaced on disk since they loaded it: " + who +
                      "; after the upgrade they run the old code against the new catalog",
                  {{"stale_sessions", sessions}});
      return out;
    }
    std::set<std::string> databases;
    for (const auto& db : upgrade.databases) databases.insert(db.datname);
    out["recycled"] = RecycleSessions(*conns.front(), json::array(), mode, databases);
    if (sessions.empty()) return out;
    ctx.Event("applying", "warning",
              "after the apply " + count + " still run an old copy of a library of " + upgrade.extname + ": " +
                  who + (mode == "none" ? "; recycle_sessions is none: reconnect them to load the new library"
                                        : "; recycle_sessions is " + mode),
              {{"stale_sessions", sessions}});
    if (mode == "none") return out;
    out["recycled"] = RecycleSessions(*conns.front(), sessions, mode, databases);
    const json& recycled = out["recycled"];
    std::string kept;
    for (const auto& k : recycled["kept"])
      kept += (kept.empty() ? "" : "; ") + ("pid " + std::to_string(k.value("pid", 0)) + ": " + k.value("reason", ""));
    ctx.Event("applying", recycled["kept"].empty() ? "info" : "warning",
              "recycle_sessions " + mode + ": terminated " + std::to_string(recycled.value("count", 0)) +
                  " session(s) on the old library" + (kept.empty() ? "" : "; kept " + kept),
              recycled);
  } catch (const std::exception& e) {
    out["error"] = e.what();
    ctx.Event("applying", "warning",
              std::string("could not look for sessions on an old copy of the extension's library: ") + e.what());
  }
  return out;
}

}  // namespace safe_upgrade
