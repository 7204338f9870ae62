// Built-in checks of the extension itself (see extension_checks.h).
#include "checks/extension_checks.h"

#include <map>
#include <set>

#include "checks/run_as.h"

namespace safe_upgrade {
namespace {

// The validators PostgreSQL itself runs at CREATE FUNCTION: for C functions they load the library
// and look up the symbol, for SQL functions they parse and analyse the body (so a body calling a
// function the upgrade dropped fails here). Other languages are only checked for resolving.
const std::map<std::string, std::string>& Validators() {
  static const std::map<std::string, std::string> v = {{"c", "pg_catalog.fmgr_c_validator"},
                                                       {"sql", "pg_catalog.fmgr_sql_validator"},
                                                       {"internal", "pg_catalog.fmgr_internal_validator"},
                                                       {"plpgsql", "pg_catalog.plpgsql_validator"}};
  return v;
}

bool IsPostgisFamily(const std::string& extname) { return extname.rfind("postgis", 0) == 0; }

std::string Lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

std::optional<std::string> ValidateFunction(PgConn& conn, const std::string& oid,
                                            const std::string& language) {
  auto it = Validators().find(language);
  if (it == Validators().end()) return std::nullopt;
  try {
    conn.Exec("SELECT " + it->second + "($1::oid)", {oid});
  } catch (const PgError& e) {
    if (IsConnectionError(e)) throw;
    // Validating a C function needs USAGE on the (untrusted) language, i.e. a superuser agent
    // role; without it the check says nothing about the upgrade.
    if (e.sqlstate() == "42501") return std::nullopt;
    return e.Full();
  }
  return std::nullopt;
}

CheckResult CheckVersion(PgConn& conn, const std::string& extname, const std::string& target_version) {
  return TimedCheck("extension_version", "builtin", [&](CheckResult& c) {
    auto r = conn.Exec("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1", {extname});
    if (r.rows.empty()) {
      c.ok = false;
      c.message = "extension " + extname + " is not installed";
    } else if (r.rows[0][0].value_or("") != target_version) {
      c.ok = false;
      c.message = extname + " is at version " + r.rows[0][0].value_or("") + ", expected " + target_version;
    } else {
      c.message = extname + " is at version " + target_version;
    }
  });
}

std::vector<CheckResult> CheckFamilyVersions(PgConn& conn, const std::vector<std::string>& family,
                                             const std::string& target_version) {
  std::vector<CheckResult> out;
  for (const auto& member : family) {
    CheckResult c = CheckVersion(conn, member, target_version);
    c.name = "extension_version of " + member;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<CheckResult> CheckFunctions(PgConn& conn, const std::string& extname) {
  std::vector<CheckResult> out;
  auto funcs = conn.Exec(
      "SELECT p.oid::text, p.oid::regprocedure::text, l.lanname::text, coalesce(p.probin, ''), "
      "       (pg_catalog.to_regprocedure(p.oid::regprocedure::text) IS NOT DISTINCT FROM p.oid)::text, "
      "       n.nspname::text "
      "FROM pg_catalog.pg_extension e "
      "JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = "
      "e.oid "
      "  AND d.deptype = 'e' AND d.classid = 'pg_catalog.pg_proc'::regclass "
      "JOIN pg_catalog.pg_proc p ON p.oid = d.objid "
      "JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
      "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
      "WHERE e.extname = $1 AND p.prokind IN ('f', 'p') ORDER BY p.oid",
      {extname});

  // Each C library once, by LOAD: a missing or broken .so is named once, not per function.
  std::set<std::string> libraries;
  for (const auto& row : funcs.rows)
    if (row[2] == std::optional<std::string>("c") && !row[3]->empty()) libraries.insert(*row[3]);
  std::set<std::string> broken_libraries;
  for (const auto& lib : libraries) {
    out.push_back(TimedCheck("library " + lib + " loads", "builtin", [&](CheckResult& c) {
      try {
        conn.ExecScript("LOAD " + conn.QuoteLiteral(lib));
        c.message = "loaded";
      } catch (const PgError& e) {
        if (IsConnectionError(e)) throw;
        // LOAD outside $libdir/plugins needs superuser; the C validator below still loads it.
        if (e.sqlstate() == "42501") {
          c.message = "not loaded explicitly (" + e.message() + "); the function validators load it";
          return;
        }
        broken_libraries.insert(lib);
        throw;
      }
    }));
  }

  out.push_back(TimedCheck("functions resolve and validate", "builtin", [&](CheckResult& c) {
    std::string schema = funcs.rows.empty() ? "" : funcs.rows[0][5].value_or("");
    // Extension SQL functions may call each other unqualified; validate them with the
    // extension's schema first on the search_path, as the extension's own scripts do.
    std::string path = conn.Exec("SELECT pg_catalog.current_setting('search_path')").Scalar();
    ScopedSetting search_path(conn, "search_path",
                              schema.empty() ? path : conn.QuoteIdent(schema) + ", " + path);
    ScopedSetting bodies(conn, "check_function_bodies", "on");
    std::vector<std::string> failures;
    size_t validated = 0;
    for (const auto& row : funcs.rows) {
      const std::string& signature = *row[1];
      if (row[4] != std::optional<std::string>("true")) {
        failures.push_back(signature + ": does not resolve by its signature");
        continue;
      }
      if (row[2] == std::optional<std::string>("c") && broken_libraries.count(*row[3])) {
        failures.push_back(signature + ": its library " + *row[3] + " does not load");
        continue;
      }
      if (auto failure = ValidateFunction(conn, *row[0], *row[2])) {
        failures.push_back(signature + ": " + *failure);
        continue;
      }
      ++validated;
    }
    if (!failures.empty()) {
      c.ok = false;
      c.message = std::to_string(failures.size()) + " of " + std::to_string(funcs.rows.size()) +
                  " functions failed: " + JoinLimited(failures);
    } else {
      c.message = std::to_string(funcs.rows.size()) + " functions resolve (" + std::to_string(validated) +
                  " validated by their language)";
    }
  }));
  return out;
}

std::optional<CheckResult> CheckPostgis(PgConn& conn, const std::string& extname,
                                        const std::vector<std::string>& family) {
  if (!IsPostgisFamily(extname)) return std::nullopt;
  auto schema = conn.Exec(
      "SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = "
      "e.extnamespace "
      "WHERE e.extname = 'postgis'");
  if (schema.Empty()) return std::nullopt;
  return TimedCheck("postgis_full_version", "builtin", [&](CheckResult& c) {
    std::string report =
        conn.Exec("SELECT " + conn.QuoteIdent(schema.Scalar()) + ".postgis_full_version()").Scalar();
    std::string lower = Lower(report);
    if (lower.find("need upgrade") != std::string::npos || lower.find("unpackaged") != std::string::npos) {
      c.ok = false;
      c.message = "postgis_full_version() reports a problem: " + report;
      return;
    }
    auto behind = conn.Exec(
        "SELECT pg_catalog.string_agg(x.extname || ' at ' || x.extversion, ', ' ORDER BY x.extname), "
        "       pg_catalog.min(p.extversion) "
        "FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_extension p ON p.extname = 'postgis' "
        "WHERE x.extname LIKE 'postgis%' AND x.extname <> 'postgis' AND x.extversion <> p.extversion "
        "  AND x.extname::text = ANY ($1::text[])",
        {ArrayLiteral(family)});
    if (!behind.Empty() && behind.rows[0][0]) {
      c.ok = false;
      c.message = "PostGIS extensions need upgrade: " + *behind.rows[0][0] + ", but postgis is at " +
                  behind.rows[0][1].value_or("") + " (they must be upgraded together); " + report;
    } else {
      c.message = report;
    }
  });
}

}  // namespace safe_upgrade
