// Connecting, connection-loss detection and server error printing for the command line.
#include "db.h"

#include <libpq-fe.h>

#include <regex>

#include "output.h"

namespace safe_upgrade::cli {
namespace {

std::string OptionValue(PQconninfoOption* options, const std::string& keyword) {
  for (PQconninfoOption* o = options; o && o->keyword; ++o)
    if (keyword == o->keyword && o->val && *o->val) return o->val;
  return "";
}

// libpq says 'connection to server at "h", port 1 failed: Connection refused\n\tIs the server
// running...?'. Keep the reason and its advice, on one line, without repeating the address.
std::string ReasonFrom(const std::string& libpq_message) {
  std::string text = libpq_message;
  auto failed = text.find("failed: ");
  if (text.rfind("connection to server", 0) == 0 && failed != std::string::npos)
    text = text.substr(failed + 8);
  // Only the first attempt's reason: later lines repeat it for other addresses of the same host.
  auto next = text.find("\nconnection to server");
  if (next != std::string::npos) text = text.substr(0, next);
  std::string reason = text, advice;
  auto tab = text.find("\n\t");
  if (tab != std::string::npos) {
    reason = text.substr(0, tab);
    advice = text.substr(tab + 2);
  }
  reason = OneLine(reason);
  advice = OneLine(advice);
  if (reason.rfind("FATAL:", 0) == 0) reason = OneLine(reason.substr(6));
  return advice.empty() ? reason : reason + " (" + advice + ")";
}

}  // namespace

ConnectTarget DescribeTarget(const std::string& dsn) {
  ConnectTarget target;
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(dsn.c_str(), &err);
  if (err) PQfreemem(err);
  PQconninfoOption* defaults = PQconndefaults();
  auto pick = [&](const char* keyword) {
    std::string v = parsed ? OptionValue(parsed, keyword) : "";
    if (v.empty() && defaults) v = OptionValue(defaults, keyword);
    return v;
  };
  target.host = pick("host");
  if (target.host.empty()) target.host = pick("hostaddr");
  target.port = pick("port");
  if (parsed) PQconninfoFree(parsed);
  if (defaults) PQconninfoFree(defaults);
  if (target.port.empty()) target.port = "5432";
  return target;
}

std::unique_ptr<PgConn> Connect(const std::string& dsn, std::chrono::seconds timeout) {
  ConnectTarget target = DescribeTarget(dsn);
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(dsn.c_str(), &err);
  if (!parsed) {
    std::string reason = err ? OneLine(err) : "cannot parse it";
    if (err) PQfreemem(err);
    throw ConnectError("invalid connection string (--dsn): " + reason, target);
  }
  PQconninfoFree(parsed);
  try {
    return std::make_unique<PgConn>(dsn, timeout);
  } catch (const PgError& e) {
    std::string message = e.message();
    if (target.host.empty()) {
      // libpq's compiled-in socket directory: read it back from its own message.
      std::smatch m;
      static const std::regex socket_re("socket \"(.*)/\\.s\\.PGSQL\\.([0-9]+)\"");
      target.host = std::regex_search(message, m, socket_re) ? m[1].str() : "/var/run/postgresql";
    }
    throw ConnectError("cannot connect to PostgreSQL at host \"" + target.host + "\" port " + target.port +
                           ": " + ReasonFrom(message),
                       target);
  }
}

bool IsConnectionLoss(const PgError& e, const PgConn* conn) {
  const std::string& s = e.sqlstate();
  if (s.rfind("08", 0) == 0) return true;
  // admin_shutdown, crash_shutdown, cannot_connect_now: the server is stopping or starting.
  if (s == "57P01" || s == "57P02" || s == "57P03") return true;
  return conn != nullptr && !conn->Ok();
}

void PrintServerError(std::ostream& err, const PgError& e) {
  err << "safe-upgrade: error: " << e.message() << "\n";
  if (!e.detail().empty()) err << "DETAIL: " << e.detail() << "\n";
  if (!e.hint().empty()) err << "HINT: " << e.hint() << "\n";
}

nlohmann::json ErrorJson(const PgError& e) {
  return {{"error",
           {{"sqlstate", e.sqlstate()},
            {"message", e.message()},
            {"detail", e.detail().empty() ? nlohmann::json() : nlohmann::json(e.detail())},
            {"hint", e.hint().empty() ? nlohmann::json() : nlohmann::json(e.hint())}}}};
}

nlohmann::json ErrorJson(const std::string& message, const std::string& sqlstate) {
  return {{"error",
           {{"sqlstate", sqlstate.empty() ? nlohmann::json() : nlohmann::json(sqlstate)},
            {"message", message},
            {"detail", nullptr},
            {"hint", nullptr}}}};
}

}  // namespace safe_upgrade::cli
