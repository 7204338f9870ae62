// Built-in checks of the extension's dependents (see dependent_checks.h).
#include "checks/dependent_checks.h"

#include <set>
#include <utility>

#include "checks/extension_checks.h"
#include "checks/run_as.h"
#include "postgres/dependency_rows.h"

namespace safe_upgrade {
namespace {

// Whether an object named in the 'before' rows still exists (by its identity).
bool StillExists(PgConn& conn, const std::string& type, const std::string& identity, bool& known_type) {
  known_type = true;
  if (type == "view" || type == "materialized view" || type == "table" || type == "index" ||
      type == "sequence" || type == "foreign table")
    return conn.Exec("SELECT pg_catalog.to_regclass($1) IS NOT NULL", {identity}).Scalar() == "t";
  if (type == "function" || type == "procedure")
    return conn.Exec("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL", {identity}).Scalar() == "t";
  if (type == "type" || type == "domain")
    return conn.Exec("SELECT pg_catalog.to_regtype($1) IS NOT NULL", {identity}).Scalar() == "t";
  if (type == "table column" || type == "view column" || type == "materialized view column") {
    return conn.Exec(
                   "SELECT EXISTS (SELECT 1 FROM pg_catalog.parse_ident($1) p "
                   "JOIN pg_catalog.pg_namespace n ON n.nspname = p[1] "
                   "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p[2] "
                   "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = p[3] "
                   "AND NOT a.attisdropped)",
                   {identity})
               .Scalar() == "t";
  }
  known_type = false;
  return true;
}

}  // namespace

std::vector<CheckResult> CheckDependents(PgConn& conn, const std::string& extname,
                                         const nlohmann::json& dependency_before) {
  std::vector<CheckResult> out;
  std::vector<Dependent> now;
  out.push_back(TimedCheck("dependent objects still exist", "builtin", [&](CheckResult& c) {
    now = QueryDependents(conn, extname);
    std::set<std::pair<std::string, std::string>> present;
    for (const auto& d : now)
      present.insert({d.row["object_type"].get<std::string>(), d.row["object_identity"].get<std::string>()});
    std::set<std::pair<std::string, std::string>> before;
    for (const auto& row : dependency_before)
      before.insert({row.value("object_type", ""), row.value("object_identity", "")});
    std::vector<std::string> missing;
    for (const auto& [type, identity] : before) {
      if (present.count({type, identity})) continue;
      bool known = false;
      if (!StillExists(conn, type, identity, known)) missing.push_back(type + " " + identity);
    }
    if (!missing.empty()) {
      c.ok = false;
      c.message = "the upgrade dropped " + std::to_string(missing.size()) +
                  " user object(s) that depended on " + extname + ": " + JoinLimited(missing);
    } else {
      c.message = std::to_string(before.size()) + " dependent objects from before the upgrade are present";
    }
  }));

  out.push_back(TimedCheck("dependent objects work", "builtin", [&](CheckResult& c) {
    std::vector<std::string> failures, skipped;
    std::set<std::string> done;
    size_t checked = 0;
    // sql: the statement and the role that owns the relation it reads.
    auto run_as_owner = [&](const QueryResult& sql, const std::string& what) {
      RunAs(conn, sql.rows[0][1].value_or(""), what, sql.Scalar());
    };
    for (const auto& d : now) {
      std::string key = d.classid + "/" + d.objid + "/" + std::to_string(d.objsubid);
      if (!done.insert(key).second) continue;
      std::string what =
          d.row["object_type"].get<std::string>() + " " + d.row["object_identity"].get<std::string>();
      bool is_class = d.classid == kPgClassOid;
      bool is_proc = d.classid == kPgProcOid;
      try {
        if (is_class && d.relkind == "m" &&
            conn.Exec("SELECT relispopulated::text FROM pg_catalog.pg_class WHERE oid = $1::oid", {d.objid})
                    .Scalar() != "true") {
          // WITH NO DATA: nothing to read until the user refreshes it.
          skipped.push_back(what + " (not populated)");
          continue;
        }
        if (is_class && (d.relkind == "v" || d.relkind == "m") && d.objsubid == 0) {
          // Plans the view against the upgraded extension without reading any data. Planning
          // runs the user's STABLE and IMMUTABLE functions, so it runs as the view's owner.
          auto sql = conn.Exec(
              "SELECT pg_catalog.format('SELECT * FROM %s LIMIT 0', c.oid::regclass), "
              "pg_catalog.pg_get_userbyid(c.relowner)::text "
              "FROM pg_catalog.pg_class c WHERE c.oid = $1::oid",
              {d.objid});
          if (!sql.Empty()) run_as_owner(sql, what);
        } else if (is_class && (d.relkind == "r" || d.relkind == "p" || d.relkind == "m") && d.objsubid > 0) {
          // One value through the type's output function, as a client would read it, as the
          // table's owner (its defaults, policies and the type's functions are the user's code).
          auto sql = conn.Exec(
              "SELECT pg_catalog.format('SELECT %I FROM %s LIMIT 1', a.attname, a.attrelid::regclass), "
              "pg_catalog.pg_get_userbyid(c.relowner)::text "
              "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
              "WHERE a.attrelid = $1::oid AND a.attnum = $2::int",
              {d.objid, std::to_string(d.objsubid)});
          if (!sql.Empty()) run_as_owner(sql, what);
        } else if (is_class && d.relkind == "i") {
          auto r = conn.Exec(
              "SELECT (indisvalid AND indisready)::text FROM pg_catalog.pg_index WHERE indexrelid = $1::oid",
              {d.objid});
          if (!r.Empty() && r.Scalar() != "true") failures.push_back(what + ": the index is not valid");
        } else if (is_proc) {
          auto lang = conn.Exec(
              "SELECT l.lanname::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = "
              "p.prolang "
              "WHERE p.oid = $1::oid AND p.prokind IN ('f', 'p')",
              {d.objid});
          if (!lang.Empty()) {
            ScopedSetting bodies(conn, "check_function_bodies", "on");
            if (auto failure = ValidateFunction(conn, d.objid, lang.Scalar()))
              failures.push_back(what + ": " + *failure);
          }
        } else {
          continue;
        }
        ++checked;
      } catch (const PgError& e) {
        if (IsConnectionError(e)) throw;
        // A table another session holds locked, or one the agent's role may not read, says
        // nothing about the upgrade; failing here would roll back a good upgrade.
        if (e.sqlstate() == "55P03" || e.sqlstate() == "42501") {
          skipped.push_back(what + " (" + e.message() + ")");
          continue;
        }
        failures.push_back(what + ": " + e.Full());
      }
    }
    if (!failures.empty()) {
      c.ok = false;
      c.message = std::to_string(failures.size()) + " dependent object(s) broken: " + JoinLimited(failures);
    } else {
      c.message = std::to_string(checked) + " dependent objects checked (" + std::to_string(now.size()) +
                  " dependencies on " + extname + ")";
    }
    if (!skipped.empty()) c.message += "; not checked: " + JoinLimited(skipped);
  }));
  return out;
}

}  // namespace safe_upgrade
