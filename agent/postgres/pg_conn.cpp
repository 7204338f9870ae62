// libpq wrapper implementation.
#include "postgres/pg_conn.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>

#include "base/config.h"

namespace safe_upgrade {
namespace {

std::string Field(const PGresult* res, int code) {
  const char* v = PQresultErrorField(res, code);
  return v ? v : "";
}

[[noreturn]] void ThrowFromResult(PGresult* res, PGconn* conn) {
  std::string state = res ? Field(res, PG_DIAG_SQLSTATE) : "";
  std::string msg = res ? Field(res, PG_DIAG_MESSAGE_PRIMARY) : "";
  std::string detail = res ? Field(res, PG_DIAG_MESSAGE_DETAIL) : "";
  std::string hint = res ? Field(res, PG_DIAG_MESSAGE_HINT) : "";
  if (msg.empty()) {
    msg = PQerrorMessage(conn);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  }
  if (state.empty()) state = "08006";
  if (res) PQclear(res);
  throw PgError(state, msg, detail, hint);
}

}  // namespace

PgError::PgError(std::string sqlstate, std::string message, std::string detail, std::string hint)
    : std::runtime_error(message + (detail.empty() ? "" : " (DETAIL: " + detail + ")")),
      sqlstate_(std::move(sqlstate)),
      message_(std::move(message)),
      detail_(std::move(detail)),
      hint_(std::move(hint)) {}

std::string PgError::Full() const { return what(); }

const std::string& QueryResult::Scalar() const {
  if (rows.empty() || rows[0].empty() || !rows[0][0]) throw std::runtime_error("query returned no value");
  return *rows[0][0];
}

PgConn::PgConn(const std::string& conninfo, std::chrono::seconds connect_timeout) {
  std::string info = conninfo;
  if (info.find("connect_timeout") == std::string::npos && info.find("://") == std::string::npos)
    info += " connect_timeout=" + std::to_string(connect_timeout.count());
  conn_ = PQconnectdb(info.c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    PQfinish(conn_);
    conn_ = nullptr;
    throw PgError("08001", msg);
  }
}

PgConn::~PgConn() {
  if (conn_) PQfinish(conn_);
}

bool PgConn::Ok() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

int PgConn::BackendPid() const { return PQbackendPID(conn_); }

void PgConn::Cancel() {
  PGcancel* c = PQgetCancel(conn_);
  if (!c) return;
  char err[256];
  PQcancel(c, err, sizeof err);
  PQfreeCancel(c);
}

namespace {
QueryResult ToQueryResult(PGresult* res) {
  QueryResult out;
  int ncols = PQnfields(res), nrows = PQntuples(res);
  for (int c = 0; c < ncols; ++c) out.columns.emplace_back(PQfname(res, c));
  for (int r = 0; r < nrows; ++r) {
    Row row;
    for (int c = 0; c < ncols; ++c)
      row.push_back(PQgetisnull(res, r, c) ? std::nullopt
                                           : std::optional<std::string>(PQgetvalue(res, r, c)));
    out.rows.push_back(std::move(row));
  }
  return out;
}
}  // namespace

namespace {
// The string libpq's escaping returned (freed here), or its error.
std::string TakeEscaped(PGconn* conn, char* escaped) {
  if (!escaped) throw PgError("22000", PQerrorMessage(conn));
  std::string out(escaped);
  PQfreemem(escaped);
  return out;
}
}  // namespace

std::string PgConn::QuoteIdent(const std::string& identifier) const {
  return TakeEscaped(conn_, PQescapeIdentifier(conn_, identifier.c_str(), identifier.size()));
}

std::string PgConn::QuoteLiteral(const std::string& literal) const {
  return TakeEscaped(conn_, PQescapeLiteral(conn_, literal.c_str(), literal.size()));
}

namespace {
std::vector<const char*> ParamValues(const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return values;
}
}  // namespace

void PgConn::SendQuery(const std::string& sql, const std::vector<std::optional<std::string>>& params) {
  // The extended protocol (even without parameters) accepts exactly one statement.
  auto values = ParamValues(params);
  if (!PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                         nullptr, 0))
    ThrowFromResult(nullptr, conn_);
}

std::optional<QueryResult> PgConn::PollResult(std::chrono::milliseconds wait) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    if (!PQconsumeInput(conn_)) ThrowFromResult(nullptr, conn_);
    if (!PQisBusy(conn_)) break;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    struct pollfd pfd = {PQsocket(conn_), POLLIN, 0};
    if (pfd.fd < 0) ThrowFromResult(nullptr, conn_);
    int r = poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) throw PgError("08006", "poll on the connection failed");
  }
  // Drain every result of the statement; the first error wins, as with PQexec.
  PGresult* error = nullptr;
  std::optional<QueryResult> out;
  while (PGresult* res = PQgetResult(conn_)) {
    auto status = PQresultStatus(res);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      if (!error) out = ToQueryResult(res);
      PQclear(res);
    } else if (!error) {
      error = res;
    } else {
      PQclear(res);
    }
  }
  if (error) ThrowFromResult(error, conn_);
  if (!out) {
    if (PQstatus(conn_) != CONNECTION_OK) ThrowFromResult(nullptr, conn_);
    out = QueryResult{};
  }
  return out;
}

QueryResult PgConn::Exec(const std::string& sql, const std::vector<std::optional<std::string>>& params) {
  auto values = ParamValues(params);
  PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                               nullptr, nullptr, 0);
  auto status = PQresultStatus(res);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) ThrowFromResult(res, conn_);
  QueryResult out = ToQueryResult(res);
  PQclear(res);
  return out;
}

void PgConn::ExecScript(const std::string& sql) {
  PGresult* res = PQexec(conn_, sql.c_str());
  auto status = PQresultStatus(res);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) ThrowFromResult(res, conn_);
  PQclear(res);
}

std::string QuoteConnValue(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string ConnInfo(const std::string& host, int port, const std::string& dbname, const std::string& user,
                     const std::string& application_name) {
  std::string s =
      "host=" + QuoteConnValue(host) + " port=" + std::to_string(port) + " dbname=" + QuoteConnValue(dbname);
  if (!user.empty()) s += " user=" + QuoteConnValue(user);
  if (!application_name.empty()) s += " application_name=" + QuoteConnValue(application_name);
  return s;
}

// Declared with the settings (base/config.h); defined here, with the conninfo it builds, so that the
// base layer needs nothing of libpq.
std::string AgentConfig::ConnInfo(const std::string& application_name, const std::string& datname) const {
  return safe_upgrade::ConnInfo(socket_dir, port, datname.empty() ? database : datname, db_user,
                                application_name);
}

std::string ArrayLiteral(const std::vector<std::string>& values) {
  std::string out = "{";
  for (const auto& v : values) {
    if (out.size() > 1) out += ",";
    out += '"';
    for (char ch : v) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

}  // namespace safe_upgrade
