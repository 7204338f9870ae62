// The user's health checks (see user_checks.h).
#include "checks/user_checks.h"

#include <chrono>
#include <optional>

#include "base/elapsed.h"
#include "checks/run_as.h"

namespace safe_upgrade {

CheckResult RunUserCheck(PgConn& conn, const HealthCheckRecord& check) {
  CheckResult c;
  c.name = check.name;
  c.kind = "user";
  auto started = std::chrono::steady_clock::now();
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
    auto client_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::stoll(ms)) +
                           std::chrono::seconds(5);
    conn.SendQuery(RunAsCall(), {check.check_sql});
    std::optional<QueryResult> r;
    bool cancelled = false;
    while (!(r = conn.PollResult(std::chrono::milliseconds(200)))) {
      if (std::chrono::steady_clock::now() > client_deadline) {
        if (cancelled)
          throw PgError("57014", "the check did not finish within its timeout and ignored the cancel");
        conn.Cancel();
        cancelled = true;
        client_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
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
  c.duration_ms = MsSince(started);
  return c;
}

}  // namespace safe_upgrade
