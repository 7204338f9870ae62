// Runs user code as its owner (see run_as.h).
#include "checks/run_as.h"

namespace safe_upgrade {
namespace {

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

constexpr const char* kRunAsCall =
    "SELECT returned_row::text, columns::text, first_value FROM pg_temp.safe_upgrade_run_as($1)";

}  // namespace

// In the open transaction: the function above, owned by role. A role that no longer exists is an
// error of its own: the code must not run at all rather than as someone else.
void PrepareRunAs(PgConn& conn, const std::string& role, const std::string& whose) {
  if (role.empty() || conn.Exec("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", {role}).Empty())
    throw PgError("42704", "role \"" + role + "\" that owns " + whose + " does not exist, so it does not run",
                  "", "Re-create it as an existing role, or remove it.");
  conn.ExecScript(kRunAsFunction);
  conn.ExecScript("ALTER FUNCTION pg_temp.safe_upgrade_run_as(text) OWNER TO " + conn.QuoteIdent(role));
}

const char* RunAsCall() { return kRunAsCall; }

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

}  // namespace safe_upgrade
