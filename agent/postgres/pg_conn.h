// A small libpq wrapper: connect, run parameterised queries, and get PostgreSQL's errors as
// exceptions that keep the SQLSTATE, message and DETAIL apart.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

struct pg_conn;

namespace safe_upgrade {

class PgError : public std::runtime_error {
 public:
  PgError(std::string sqlstate, std::string message, std::string detail = "", std::string hint = "");
  const std::string& sqlstate() const { return sqlstate_; }
  const std::string& message() const { return message_; }
  const std::string& detail() const { return detail_; }
  const std::string& hint() const { return hint_; }
  // "message (DETAIL: detail)" as people expect to read it.
  std::string Full() const;

 private:
  std::string sqlstate_, message_, detail_, hint_;
};

using Row = std::vector<std::optional<std::string>>;

struct QueryResult {
  std::vector<std::string> columns;
  std::vector<Row> rows;
  bool Empty() const { return rows.empty(); }
  // The first column of the first row; throws when there is none or it is NULL.
  const std::string& Scalar() const;
};

class PgConn {
 public:
  // conninfo is a libpq connection string or URI. connect_timeout applies when it has none.
  explicit PgConn(const std::string& conninfo,
                  std::chrono::seconds connect_timeout = std::chrono::seconds(10));
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  QueryResult Exec(const std::string& sql, const std::vector<std::optional<std::string>>& params = {});
  // Runs several statements (no parameters), e.g. "BEGIN; SET LOCAL ...".
  void ExecScript(const std::string& sql);
  int BackendPid() const;
  bool Ok() const;
  pg_conn* raw() const { return conn_; }
  // Asks the server to cancel the statement running on this connection.
  void Cancel();

  // Identifier / literal quoting by libpq (PQescapeIdentifier / PQescapeLiteral), for the few
  // statements that cannot take bind parameters (ALTER EXTENSION ... UPDATE TO ...).
  std::string QuoteIdent(const std::string& identifier) const;
  std::string QuoteLiteral(const std::string& literal) const;

  // Asynchronous execution, so that a caller can watch something else (e.g. who blocks a lock)
  // while a statement runs. SendQuery starts one statement; PollResult waits up to `wait` and
  // returns std::nullopt while it still runs, its result once it finished, or throws PgError.
  // SendQuery uses the extended protocol, so text holding several statements is refused.
  void SendQuery(const std::string& sql, const std::vector<std::optional<std::string>>& params = {});
  std::optional<QueryResult> PollResult(std::chrono::milliseconds wait);

 private:
  pg_conn* conn_ = nullptr;
};

// Builds "host=... port=... dbname=... user=..." with values quoted for libpq.
std::string ConnInfo(const std::string& host, int port, const std::string& dbname,
                     const std::string& user = "", const std::string& application_name = "safe-upgrade");

// Quoting a value for a libpq conninfo string.
std::string QuoteConnValue(const std::string& value);

// A text[] literal for a bind parameter ($1::text[] or $1::int[]): {"a","b\"c"}.
std::string ArrayLiteral(const std::vector<std::string>& values);

}  // namespace safe_upgrade
