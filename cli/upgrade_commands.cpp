// `plan`, `run`, `status`, `history`, `approve`, `cancel` and `rollback`: thin wrappers over the
// SQL functions of the safe_upgrade schema and its catalog tables.
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "db.h"
#include "follow.h"
#include "output.h"
#include "renderers.h"
#include "upgrade_doc.h"
#include "upgrade_json.h"

namespace safe_upgrade::cli {
namespace {

using nlohmann::json;

void PrintJson(const json& j) { std::cout << j.dump(2) << "\n" << std::flush; }

int ReportConnectError(const ConnectError& e, bool as_json) {
  std::cerr << "safe-upgrade: " << e.what() << "\n";
  if (as_json) PrintJson(ErrorJson(e.what(), "08001"));
  return kExitFailure;
}

int ReportServerError(const PgError& e, bool as_json) {
  PrintServerError(std::cerr, e);
  if (as_json) PrintJson(ErrorJson(e));
  return kExitFailure;
}

int ReportError(const std::string& message, bool as_json) {
  std::cerr << "safe-upgrade: " << message << "\n";
  if (as_json) PrintJson(ErrorJson(message));
  return kExitFailure;
}

// Runs body with a connection, turning connection and server errors into exit code 1.
template <typename F>
int WithConnection(const GlobalOptions& g, bool as_json, F&& body) {
  std::unique_ptr<PgConn> conn;
  try {
    conn = Connect(g.dsn);
  } catch (const ConnectError& e) {
    return ReportConnectError(e, as_json);
  }
  try {
    return body(*conn);
  } catch (const PgError& e) {
    if (IsConnectionLoss(e, conn.get()))
      return ReportError("lost the connection to the server: " + OneLine(e.message()), as_json);
    return ReportServerError(e, as_json);
  } catch (const std::exception& e) {
    return ReportError(e.what(), as_json);
  }
}

// ---- plan -------------------------------------------------------------------------------------

struct PlanArgs {
  std::string ext, version;
  bool json = false;
};

int Plan(const GlobalOptions& g, const PlanArgs& a) {
  return WithConnection(g, a.json, [&](PgConn& conn) {
    std::string text =
        conn.Exec("SELECT safe_upgrade.plan($1::name, $2::text)::text", {a.ext, a.version}).Scalar();
    if (a.json) {
      std::cout << text << "\n";
    } else {
      std::cout << "plan for " << a.ext << " -> " << a.version << "\n";
      PrintPlan(std::cout, json::parse(text));
    }
    return static_cast<int>(kExitOk);
  });
}

// ---- run --------------------------------------------------------------------------------------

struct RunArgs {
  std::string ext, version;
  bool dry_run = false, no_rollback = false, approve = false, json = false;
  std::string rollback_target;  // empty: the server's default (auto)
  std::vector<std::string> databases;  // empty: every database that has the extension
  int reconnect_timeout_s = 300;
};

int Run(const GlobalOptions& g, const RunArgs& a) {
  CatchInterrupts();
  int64_t id = 0;
  int rc = WithConnection(g, a.json, [&](PgConn& conn) {
    json options = json::object();
    if (a.dry_run) options["dry_run_only"] = true;
    if (a.no_rollback) options["auto_rollback"] = false;
    if (!a.rollback_target.empty()) options["rollback_target"] = a.rollback_target;
    if (!a.databases.empty()) options["databases"] = a.databases;
    if (!a.dry_run) options["require_approval"] = !a.approve;
    id = std::stoll(conn.Exec("SELECT safe_upgrade.begin($1::name, $2::text, $3::jsonb)::text",
                              {a.ext, a.version, options.dump()})
                        .Scalar());
    std::string from = "?", where = "?";
    auto r = conn.Exec(
        "SELECT u.from_version, (SELECT string_agg(d.datname::text, ', ' ORDER BY d.datname) "
        "FROM safe_upgrade.upgrade_databases d WHERE d.upgrade_id = u.id) "
        "FROM safe_upgrade.upgrades u WHERE u.id = $1::bigint",
        {std::to_string(id)});
    if (!r.Empty() && r.rows[0][0]) from = *r.rows[0][0];
    if (!r.Empty() && r.rows[0][1]) where = *r.rows[0][1];
    std::ostream& out = a.json ? std::cerr : std::cout;
    out << "upgrade " << id << ": " << a.ext << " " << from << " -> " << a.version << " in database " << where
        << (a.dry_run ? " (dry run only: production is not touched)" : "") << "\n"
        << "  Ctrl-C stops watching, not the upgrade; watch again with: safe-upgrade status " << id << "\n"
        << std::flush;
    return static_cast<int>(kExitOk);
  });
  if (rc != kExitOk) return rc;
  FollowOptions f;
  f.dsn = g.dsn;
  f.id = id;
  f.json = a.json;
  f.reconnect_timeout_s = a.reconnect_timeout_s;
  return FollowUpgrade(f);
}

// ---- status / history -------------------------------------------------------------------------

struct StatusArgs {
  int64_t id = 0;
  bool json = false;
};

int Status(const GlobalOptions& g, const StatusArgs& a) {
  return WithConnection(g, a.json, [&](PgConn& conn) {
    int64_t id = a.id;
    if (id == 0) {
      auto current = CurrentUpgradeId(conn);
      if (!current)
        return ReportError("there are no upgrades yet; start one with: safe-upgrade run EXT VERSION", a.json);
      id = *current;
    }
    auto doc = LoadUpgradeDoc(conn, id, 0);
    if (!doc) return ReportError("upgrade " + std::to_string(id) + " does not exist", a.json);
    if (a.json)
      PrintJson(DocToJson(*doc));
    else
      PrintStatus(std::cout, *doc);
    return static_cast<int>(kExitOk);
  });
}

struct HistoryArgs {
  int limit = 50;
  bool json = false;
};

int History(const GlobalOptions& g, const HistoryArgs& a) {
  return WithConnection(g, a.json, [&](PgConn& conn) {
    std::string text =
        conn.Exec(
                "SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id DESC), '[]')::text FROM ("
                "  SELECT id, extname, from_version, to_version, state, created_by, created_at, "
                "         updated_at, round(extract(epoch FROM updated_at - created_at), 3) AS "
                "duration_s, error "
                "  FROM safe_upgrade.upgrades ORDER BY id DESC LIMIT $1::int) x",
                {std::to_string(a.limit)})
            .Scalar();
    json rows = json::parse(text);
    if (a.json) {
      PrintJson(rows);
      return static_cast<int>(kExitOk);
    }
    if (rows.empty()) {
      std::cout << "no upgrades yet; start one with: safe-upgrade run EXT VERSION\n";
      return static_cast<int>(kExitOk);
    }
    Table t({"id", "extension", "versions", "state", "started", "duration", "error"});
    for (const auto& r : rows) {
      auto secs = JsonNumber(r, "duration_s");
      t.AddRow({JsonText(r["id"]), JsonString(r, "extname"),
                JsonString(r, "from_version") + " -> " + JsonString(r, "to_version"), JsonString(r, "state"),
                ShortTimestamp(JsonString(r, "created_at")), secs ? FormatDuration(*secs) : "",
                JsonString(r, "error")});
    }
    t.Print(std::cout, "", 60);
    return static_cast<int>(kExitOk);
  });
}

// ---- approve / cancel / rollback --------------------------------------------------------------

struct ActionArgs {
  int64_t id = 0;
  bool json = false;
  bool yes = false;
};

int Action(const GlobalOptions& g, const std::string& action, const ActionArgs& a) {
  std::string id = std::to_string(a.id);
  if (action == "rollback" && !a.yes && StdinIsTerminal() && !a.json) {
    std::cout
        << "roll back upgrade " << id
        << "? Production is restored to the upgrade's restore point: the server restarts and every write "
           "committed after the restore point is discarded. [y/N] "
        << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    answer = OneLine(answer);
    if (answer != "y" && answer != "Y" && answer != "yes") {
      std::cout << "not rolled back\n";
      return static_cast<int>(kExitFailure);
    }
  }
  return WithConnection(g, a.json, [&](PgConn& conn) {
    auto r = conn.Exec("SELECT safe_upgrade." + action + "($1::bigint)::text", {id});
    std::optional<std::string> result = r.Empty() ? std::nullopt : r.rows[0][0];
    auto s = conn.Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {id});
    std::string state = s.Empty() || !s.rows[0][0] ? "" : *s.rows[0][0];
    if (a.json) {
      json parsed;
      if (result) {
        try {
          parsed = json::parse(*result);
        } catch (...) {
          parsed = *result;
        }
      }
      PrintJson({{"id", a.id}, {"action", action}, {"result", parsed}, {"state", state}});
      return static_cast<int>(kExitOk);
    }
    if (action == "approve")
      std::cout << "upgrade " << id << " approved (state: " << state
                << "); the scheduler now creates the restore point and applies it to production\n";
    else if (action == "cancel")
      std::cout << "upgrade " << id << ": cancel requested (state: " << state
                << "); an upgrade stops at its next step, and only before it touches production\n";
    else
      std::cout << "upgrade " << id << ": rollback requested (state: " << state
                << "); the server restarts while production is restored to the restore point\n";
    std::cout << "  follow it: safe-upgrade status " << id << "\n";
    return static_cast<int>(kExitOk);
  });
}

}  // namespace

void AddUpgradeCommands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  // Option values live as long as the app (callbacks run after parsing).
  static PlanArgs plan;
  static RunArgs run;
  static StatusArgs status;
  static HistoryArgs history;
  static ActionArgs approve, cancel, rollback;
  const GlobalOptions* g = &global;
  int* code = &exit_code;

  auto* p = app.add_subcommand("plan", "preflight report for upgrading EXT to VERSION (read-only)");
  p->add_option("EXT", plan.ext, "extension name")->required();
  p->add_option("VERSION", plan.version, "target version")->required();
  p->add_flag("--json", plan.json, "print the plan's JSON document as is");
  p->callback([=] { *code = Plan(*g, plan); });

  auto* r = app.add_subcommand(
      "run",
      "upgrade EXT to VERSION safely (snapshot, dry run, apply, verify, rollback on failure) and follow it");
  r->add_option("EXT", run.ext, "extension name")->required();
  r->add_option("VERSION", run.version, "target version")->required();
  r->add_flag("--dry-run", run.dry_run, "stop after the dry run on a clone; production is never touched");
  r->add_flag("--no-rollback", run.no_rollback,
              "when production fails its health checks, leave the upgrade applied instead of rolling back");
  r->add_flag("--approve", run.approve, "apply to production without asking once the dry run passes");
  r->add_option("--rollback-target", run.rollback_target,
                "auto (default), ready (park a copy at the restore point: rollback in about a second) or cold "
                "(restore the snapshot)")
      ->check(CLI::IsMember({"auto", "ready", "cold"}));
  r->add_option("--database", run.databases,
                "upgrade the extension only in this database (repeatable; default: every database of the "
                "cluster that has it)")
      ->allow_extra_args(false);
  r->add_flag("--json", run.json,
              "print the final upgrade document as JSON on stdout (progress goes to stderr)");
  r->add_option("--reconnect-timeout", run.reconnect_timeout_s,
                "seconds to keep reconnecting when the connection drops (a rollback restarts the server)")
      ->capture_default_str()
      ->check(CLI::Range(1, 24 * 3600));
  r->callback([=] { *code = Run(*g, run); });

  auto* s =
      app.add_subcommand("status", "show an upgrade (default: the one in flight, else the most recent)");
  s->add_option("ID", status.id, "upgrade id")->check(CLI::PositiveNumber);
  s->add_flag("--json", status.json, "print the upgrade document as JSON");
  s->callback([=] { *code = Status(*g, status); });

  auto* h = app.add_subcommand("history", "list past upgrades, newest first");
  h->add_option("--limit", history.limit, "how many upgrades to list")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  h->add_flag("--json", history.json, "print the list as a JSON array");
  h->callback([=] { *code = History(*g, history); });

  // approve / cancel / rollback share their shape; each is spelled out so the documentation check
  // (tests/docs_check.sh) finds every subcommand name in the sources.
  auto action = [&](CLI::App* sub, const std::string& name, ActionArgs* args) {
    sub->add_option("ID", args->id, "upgrade id")->required()->check(CLI::PositiveNumber);
    sub->add_flag("--json", args->json, "print the result as JSON");
    sub->callback([=] { *code = Action(*g, name, *args); });
  };
  action(app.add_subcommand("approve", "approve an upgrade that passed its dry run and waits for approval"),
         "approve", &approve);
  action(app.add_subcommand("cancel", "cancel an upgrade that has not touched production yet"), "cancel",
         &cancel);
  auto* rb = app.add_subcommand("rollback",
                                "roll production back to an upgrade's restore point (the server restarts)");
  action(rb, "rollback", &rollback);
  rb->add_flag("-y,--yes", rollback.yes, "do not ask for confirmation on a terminal");
}

}  // namespace safe_upgrade::cli
