// The command line's side of the database: connecting (with an error that names host and port),
// telling a lost connection from an SQL error, and printing server errors with their HINT.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <stdexcept>
#include <string>

#include "postgres/pg_conn.h"

namespace safe_upgrade::cli {

// Where a DSN (or libpq's environment, when empty) points: host (or socket directory) and port.
struct ConnectTarget {
  std::string host, port;
};
ConnectTarget DescribeTarget(const std::string& dsn);

// The server could not be reached. what() is one line naming host and port.
class ConnectError : public std::runtime_error {
 public:
  ConnectError(const std::string& message, ConnectTarget target)
      : std::runtime_error(message), target_(std::move(target)) {}
  const ConnectTarget& target() const { return target_; }

 private:
  ConnectTarget target_;
};

// Connects with the DSN (empty: libpq's environment). Throws ConnectError.
std::unique_ptr<PgConn> Connect(const std::string& dsn,
                                std::chrono::seconds timeout = std::chrono::seconds(10));

// True when e (raised on conn) means the connection is gone, e.g. the server restarted for a
// rollback, rather than an SQL error.
bool IsConnectionLoss(const PgError& e, const PgConn* conn);

// "safe-upgrade: error: message" plus DETAIL and HINT lines, on err.
void PrintServerError(std::ostream& err, const PgError& e);
// {"error": {"sqlstate", "message", "detail", "hint"}} for --json output.
nlohmann::json ErrorJson(const PgError& e);
nlohmann::json ErrorJson(const std::string& message, const std::string& sqlstate = "");

}  // namespace safe_upgrade::cli
