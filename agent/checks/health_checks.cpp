// Health checks and dependency rows.
#include "checks/health_checks.h"

#include <chrono>
#include <map>
#include <set>
#include <tuple>

#include "core/catalog_queries.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t ElapsedMs(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// Fixed catalog OIDs (RelationRelationId, ProcedureRelationId), as pg_depend.classid text.
constexpr const char* kPgClassOid = "1259";
constexpr const char* kPgProcOid = "1255";

struct Dependent {
  json row;
  std::string classid, objid;
  int objsubid = 0;
  std::string relkind;
};

std::vector<Dependent> QueryDependents(PgConn& conn, const std::string& extname) {
  auto r = conn.Exec(DependencyRowsQuery(), {extname});
  std::vector<Dependent> out;
  for (const auto& row : r.rows) {
    Dependent d;
    d.row = {{"object_type", row[0].value_or("")},
             {"object_schema", row[1] ? json(*row[1]) : json(nullptr)},
             {"object_identity", row[2].value_or("")},
             {"depends_on_type", row[3].value_or("")},
             {"depends_on_identity", row[4].value_or("")},
             {"deptype", row[5].value_or("n")}};
    d.classid = row[6].value_or("0");
    d.objid = row[7].value_or("0");
    d.objsubid = std::stoi(row[8].value_or("0"));
    d.relkind = row[9].value_or("");
    out.push_back(std::move(d));
  }
  return out;
}

// Sets a session setting and puts the old value back when it goes out of scope.
class ScopedSetting {
 public:
  ScopedSetting(PgConn& conn, const std::string& name, const std::string& value) : conn_(conn), name_(name) {
    old_ = conn_.Exec("SELECT pg_catalog.current_setting($1)", {name_}).Scalar();
    conn_.Exec("SELECT pg_catalog.set_config($1, $2, false)", {name_, value});
  }
  ~ScopedSetting() {
    try {
      if (conn_.Ok()) conn_.Exec("SELECT pg_catalog.set_config($1, $2, false)", {name_, old_});
    } catch (...) {
    }
  }

 private:
  PgConn& conn_;
  std::string name_, old_;
};

// User code (a health check's text, a view's functions at plan time, a column type's output
// function) runs as the role that owns it, never as the agent's superuser session. SET ROLE is not
// enough: the code could RESET ROLE or set_config('role', ...) its way back. Instead, inside a
// transaction that is always rolled back, the agent creates a pg_temp plpgsql function that opens
// a cursor on the statement (a bind parameter, never spliced), makes it SECURITY DEFINER owned by
// the role, and calls it. Why that holds:
// - while a security-definer function runs, PostgreSQL refuses SET ROLE, RESET ROLE,
//   set_config('role') and SET SESSION AUTHORIZATION (42501, "cannot set parameter ... within
//   security-definer function"), in everything the statement calls too;
// - a cursor opens on exactly one query: text holding several statements, or a utility statement
//   (COMMIT, PREPARE, SET ...), is refused before any of it runs;
// - transaction control is refused inside the function (also in a DO block or procedure it
//   calls), so nothing can end the transaction that undoes it;
// - the role owns the function and may alter it, but it is called once and then rolled back with
//   everything the statement changed (catalog, settings, temp objects). Prepared statements
//   survive a rollback (a function the check calls could PREPARE one), so they are deallocated
//   before the agent runs anything else on the connection.
constexpr const char* kRunAsFunction = R"SQL(
CREATE FUNCTION pg_temp.safe_upgrade_run_as(statement text, OUT returned_row boolean, OUT columns integer,
                                            OUT first_value text, OUT row_text text)
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
  c refcursor;
  r record;
BEGIN
  OPEN c NO SCROLL FOR EXECUTE statement;
  FETCH c INTO r;
  returned_row := FOUND;
  IF returned_row THEN
    -- The row as text passes every value through its type's output function, as a client reads it.
    row_text := r::text;
    SELECT pg_catalog.count(*)::integer, (pg_catalog.array_agg(j.value))[1] INTO columns, first_value
    FROM pg_catalog.json_each_text(pg_catalog.row_to_json(r)) j;
  END IF;
  CLOSE c;
END
$fn$
)SQL";

struct RunAsResult {
  bool returned_row = false;
  int columns = 0;
  std::optional<std::string> first_value;
};

// In the open transaction: the function above, owned by role. A role that no longer exists is an
// error of its own: the code must not run at all rather than as someone else.
void PrepareRunAs(PgConn& conn, const std::string& role, const std::string& whose) {
  if (role.empty() || conn.Exec("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", {role}).Empty())
    throw PgError("42704", "role \"" + role + "\" that owns " + whose + " does not exist, so it does not run",
                  "", "Re-create it as an existing role, or remove it.");
  conn.ExecScript(kRunAsFunction);
  conn.ExecScript("ALTER FUNCTION pg_temp.safe_upgrade_run_as(text) OWNER TO " + conn.QuoteIdent(role));
}

constexpr const char* kRunAsCall =
    "SELECT returned_row::text, columns::text, first_value FROM pg_temp.safe_upgrade_run_as($1)";

RunAsResult ToRunAsResult(const QueryResult& r) {
  RunAsResult out;
  if (r.rows.empty() || r.rows[0].size() < 3) return out;
  out.returned_row = r.rows[0][0] == std::optional<std::string>("true");
  out.columns = out.returned_row ? std::stoi(r.rows[0][1].value_or("0")) : 0;
  out.first_value = r.rows[0][2];
  return out;
}

// Ends the run-as transaction; best effort after an error, as long as the connection lives.
void EndRunAs(PgConn& conn) {
  if (conn.Ok()) conn.ExecScript("ROLLBACK; DEALLOCATE ALL");
}

// Runs one statement as role (see kRunAsFunction), in a transaction of its own.
RunAsResult RunAs(PgConn& conn, const std::string& role, const std::string& whose,
                  const std::string& statement) {
  conn.ExecScript("BEGIN");
  try {
    PrepareRunAs(conn, role, whose);
    auto out = ToRunAsResult(conn.Exec(kRunAsCall, {statement}));
    EndRunAs(conn);
    return out;
  } catch (const PgError&) {
    try {
      EndRunAs(conn);
    } catch (const PgError&) {
    }
    throw;
  }
}

std::string JoinLimited(const std::vector<std::string>& items, size_t max_items = 10) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) out += (i ? "; " : "") + items[i];
  if (items.size() > max_items) out += "; and " + std::to_string(items.size() - max_items) + " more";
  return out;
}

// Runs the check body; turns a PgError into a failed check unless the connection is gone.
CheckResult Timed(const std::string& name, const std::string& kind,
                  const std::function<void(CheckResult&)>& body) {
  CheckResult c;
  c.name = name;
  c.kind = kind;
  auto started = Clock::now();
  try {
    c.ok = true;
    body(c);
  } catch (const PgError& e) {
    if (IsConnectionError(e)) throw;
    c.ok = false;
    c.message = e.Full();
  }
  c.duration_ms = ElapsedMs(started);
  return c;
}

CheckResult CheckVersion(PgConn& conn, const HealthCheckInput& in) {
  return Timed("extension_version", "builtin", [&](CheckResult& c) {
    auto r = conn.Exec("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1", {in.extname});
    if (r.rows.empty()) {
      c.ok = false;
      c.message = "extension " + in.extname + " is not installed";
    } else if (r.rows[0][0].value_or("") != in.target_version) {
      c.ok = false;
      c.message =
          in.extname + " is at version " + r.rows[0][0].value_or("") + ", expected " + in.target_version;
    } else {
      c.message = in.extname + " is at version " + in.target_version;
    }
  });
}

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

// Runs a validator on one function; a failure is a string, a lost connection an exception.
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

std::vector<CheckResult> CheckFunctions(PgConn& conn, const HealthCheckInput& in) {
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
      {in.extname});

  // Each C library once, by LOAD: a missing or broken .so is named once, not per function.
  std::set<std::string> libraries;
  for (const auto& row : funcs.rows)
    if (row[2] == std::optional<std::string>("c") && !row[3]->empty()) libraries.insert(*row[3]);
  std::set<std::string> broken_libraries;
  for (const auto& lib : libraries) {
    out.push_back(Timed("library " + lib + " loads", "builtin", [&](CheckResult& c) {
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

  out.push_back(Timed("functions resolve and validate", "builtin", [&](CheckResult& c) {
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

std::vector<CheckResult> CheckDependents(PgConn& conn, const HealthCheckInput& in) {
  std::vector<CheckResult> out;
  std::vector<Dependent> now;
  out.push_back(Timed("dependent objects still exist", "builtin", [&](CheckResult& c) {
    now = QueryDependents(conn, in.extname);
    std::set<std::pair<std::string, std::string>> present;
    for (const auto& d : now)
      present.insert({d.row["object_type"].get<std::string>(), d.row["object_identity"].get<std::string>()});
    std::set<std::pair<std::string, std::string>> before;
    for (const auto& row : in.dependency_before)
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
                  " user object(s) that depended on " + in.extname + ": " + JoinLimited(missing);
    } else {
      c.message = std::to_string(before.size()) + " dependent objects from before the upgrade are present";
    }
  }));

  out.push_back(Timed("dependent objects work", "builtin", [&](CheckResult& c) {
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
                  " dependencies on " + in.extname + ")";
    }
    if (!skipped.empty()) c.message += "; not checked: " + JoinLimited(skipped);
  }));
  return out;
}

bool IsPostgisFamily(const std::string& extname) { return extname.rfind("postgis", 0) == 0; }

std::string Lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::optional<CheckResult> CheckPostgis(PgConn& conn, const HealthCheckInput& in) {
  if (!IsPostgisFamily(in.extname)) return std::nullopt;
  auto schema = conn.Exec(
      "SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = "
      "e.extnamespace "
      "WHERE e.extname = 'postgis'");
  if (schema.Empty()) return std::nullopt;
  return Timed("postgis_full_version", "builtin", [&](CheckResult& c) {
    std::string report =
        conn.Exec("SELECT " + conn.QuoteIdent(schema.Scalar()) + ".postgis_full_version()").Scalar();
    std::string lower = Lower(report);
    if (lower.find("need upgrade") != std::string::npos || lower.find("unpackaged") != std::string::npos) {
      c.ok = false;
      c.message = "postgis_full_version() reports a problem: " + report;
    } else {
      c.message = report;
    }
  });
}

}  // namespace

bool IsConnectionError(const PgError& e) {
  const std::string& s = e.sqlstate();
  return s.rfind("08", 0) == 0 || s == "57P01" || s == "57P02" || s == "57P03";
}

json CheckResult::ToJson() const {
  json out = {{"name", name}, {"kind", kind}, {"ok", ok}, {"message", message}, {"duration_ms", duration_ms}};
  if (!datname.empty()) out["datname"] = datname;
  return out;
}

json ChecksToJson(const std::vector<CheckResult>& checks) {
  json out = json::array();
  for (const auto& c : checks) out.push_back(c.ToJson());
  return out;
}

const CheckResult* FirstFailure(const std::vector<CheckResult>& checks) {
  for (const auto& c : checks)
    if (!c.ok) return &c;
  return nullptr;
}

CheckResult RunUserCheck(PgConn& conn, const HealthCheckRecord& check) {
  CheckResult c;
  c.name = check.name;
  c.kind = "user";
  auto started = Clock::now();
  try {
    // Its own transaction, rolled back: a check must not change anything. The timeout is the
    // server's statement_timeout (it also bounds lock waits); a missing or zero timeout gets 30 s
    // so that no check can hang the job.
    conn.ExecScript("BEGIN");
    auto ms =
        conn.Exec("SELECT greatest(coalesce((extract(epoch FROM $1::interval) * 1000)::bigint, 0), 0)::text",
                  {check.timeout.empty() ? std::string("30s") : check.timeout})
            .Scalar();
    if (ms == "0") ms = "30000";
    conn.Exec(
        "SELECT pg_catalog.set_config('statement_timeout', $1, true), pg_catalog.set_config('lock_timeout', "
        "$1, true)",
        {ms});
    // The check runs with exactly the privileges of the role that added it, with no way back to
    // the agent's (see kRunAsFunction): an operator must not gain superuser powers through it.
    PrepareRunAs(conn, check.created_by, "health check " + check.name);
    auto client_deadline = Clock::now() + std::chrono::milliseconds(std::stoll(ms)) + std::chrono::seconds(5);
    conn.SendQuery(kRunAsCall, {check.check_sql});
    std::optional<QueryResult> r;
    bool cancelled = false;
    while (!(r = conn.PollResult(std::chrono::milliseconds(200)))) {
      if (Clock::now() > client_deadline) {
        if (cancelled)
          throw PgError("57014", "the check did not finish within its timeout and ignored the cancel");
        conn.Cancel();
        cancelled = true;
        client_deadline = Clock::now() + std::chrono::seconds(5);
      }
    }
    EndRunAs(conn);
    RunAsResult result = ToRunAsResult(*r);
    if (!result.returned_row || result.columns == 0) {
      c.ok = false;
      c.message = "returned no rows (a check must return true)";
    } else if (!result.first_value) {
      c.ok = false;
      c.message = "returned NULL (a check must return true)";
    } else if (*result.first_value == "true") {
      c.ok = true;
      c.message = "returned true";
    } else if (*result.first_value == "false") {
      c.ok = false;
      c.message = "returned false";
    } else {
      c.ok = false;
      c.message = "returned " + *result.first_value + ", not true";
    }
  } catch (const PgError& e) {
    if (IsConnectionError(e)) throw;
    try {
      EndRunAs(conn);
    } catch (const PgError&) {
    }
    c.ok = false;
    if (e.sqlstate() == "57014" && e.message().find("statement timeout") != std::string::npos)
      c.message = e.Full() + " (timeout " + check.timeout + ")";
    else if (e.sqlstate() == "42P11")  // the cursor refused it
      c.message = e.Full() + " (a check is one query that returns a row)";
    else
      c.message = e.Full();
  }
  c.duration_ms = ElapsedMs(started);
  return c;
}

std::vector<CheckResult> RunHealthChecks(PgConn& conn, const HealthCheckInput& in,
                                         const std::function<void(const CheckResult&)>& on_result) {
  std::vector<CheckResult> results;
  auto add = [&](CheckResult c) {
    if (on_result) on_result(c);
    results.push_back(std::move(c));
  };
  {
    // Built-in checks read catalogs and plan queries; bound them so a broken server cannot hang us.
    std::string ms =
        conn.Exec("SELECT (extract(epoch FROM $1::interval) * 1000)::bigint::text", {in.builtin_timeout})
            .Scalar();
    ScopedSetting timeout(conn, "statement_timeout", ms);
    // A lock held by someone else on production is not the upgrade's fault; do not wait long for it.
    ScopedSetting lock_timeout(conn, "lock_timeout", "5s");
    add(CheckVersion(conn, in));
    for (auto& c : CheckFunctions(conn, in)) add(std::move(c));
    for (auto& c : CheckDependents(conn, in)) add(std::move(c));
    if (auto c = CheckPostgis(conn, in)) add(std::move(*c));
  }
  for (const auto& check : in.user_checks) add(RunUserCheck(conn, check));
  return results;
}

std::vector<CheckResult> RunHealthChecksInDatabase(PgConn& conn, const HealthCheckInput& input,
                                                   const std::string& datname, const CheckReporter& report) {
  auto results = RunHealthChecks(conn, input, [&](const CheckResult& c) {
    json detail = c.ToJson();
    detail["datname"] = datname;
    report(c.ok ? "info" : "error",
           "database " + datname + ": check \"" + c.name + "\" " + (c.ok ? "passed" : "failed") +
               (c.message.empty() ? "" : ": " + c.message),
           detail);
  });
  for (auto& c : results) c.datname = datname;
  return results;
}

json DependencyRows(PgConn& conn, const std::string& extname) {
  json out = json::array();
  for (auto& d : QueryDependents(conn, extname)) out.push_back(std::move(d.row));
  return out;
}

json RecordedDependencyRows(PgConn& conn, int64_t upgrade_id, const std::string& phase,
                            const std::string& datname) {
  auto r = conn.Exec(
      "SELECT object_type, object_schema, object_identity, depends_on_type, depends_on_identity, "
      "deptype::text FROM safe_upgrade.dependency_snapshots "
      "WHERE upgrade_id = $1::bigint AND phase = $2 AND datname = $3 ORDER BY 1, 3, 4, 5",
      {std::to_string(upgrade_id), phase, datname});
  json out = json::array();
  for (const auto& row : r.rows)
    out.push_back({{"object_type", row[0].value_or("")},
                   {"object_schema", row[1] ? json(*row[1]) : json(nullptr)},
                   {"object_identity", row[2].value_or("")},
                   {"depends_on_type", row[3].value_or("")},
                   {"depends_on_identity", row[4].value_or("")},
                   {"deptype", row[5].value_or("n")}});
  return out;
}

json DependencyDrift(const json& before, const json& after) {
  using Key = std::tuple<std::string, std::string, std::string, std::string>;
  auto key = [](const json& r) {
    return Key{r.value("object_type", ""), r.value("object_identity", ""), r.value("depends_on_type", ""),
               r.value("depends_on_identity", "")};
  };
  std::map<Key, json> b, a;
  for (const auto& r : before) b[key(r)] = r;
  for (const auto& r : after) a[key(r)] = r;
  json added = json::array(), removed = json::array(), changed = json::array();
  for (const auto& [k, r] : a)
    if (!b.count(k)) added.push_back(r);
  for (const auto& [k, r] : b)
    if (!a.count(k)) removed.push_back(r);
  // An object present on both sides whose dependencies differ (e.g. a view now bound to a
  // function with a new signature) is also listed once as changed.
  std::map<std::pair<std::string, std::string>, std::pair<json, json>> objects;
  for (const auto& [k, r] : b) {
    auto& e = objects[{std::get<0>(k), std::get<1>(k)}];
    if (e.first.is_null()) e.first = json::array();
    e.first.push_back(r.value("depends_on_type", "") + " " + r.value("depends_on_identity", ""));
  }
  for (const auto& [k, r] : a) {
    auto& e = objects[{std::get<0>(k), std::get<1>(k)}];
    if (e.second.is_null()) e.second = json::array();
    e.second.push_back(r.value("depends_on_type", "") + " " + r.value("depends_on_identity", ""));
  }
  for (const auto& [obj, deps] : objects) {
    if (deps.first.is_null() || deps.second.is_null() || deps.first == deps.second) continue;
    changed.push_back({{"object_type", obj.first},
                       {"object_identity", obj.second},
                       {"before", deps.first},
                       {"after", deps.second}});
  }
  return {{"added", added}, {"removed", removed}, {"changed", changed}};
}

}  // namespace safe_upgrade
