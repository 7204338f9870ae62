// One health check's result, how results are reported (JSON), and the frame every built-in check
// runs in (timed; a failing statement fails the check, a lost connection ends the run).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct CheckResult {
  std::string name;
  std::string kind;  // "builtin" or "user"
  bool ok = false;
  std::string message;
  int64_t duration_ms = 0;
  std::string datname;  // the database it ran in, when the upgrade covers several
  nlohmann::json ToJson() const;
};

nlohmann::json ChecksToJson(const std::vector<CheckResult>& checks);
// The first failing check, or nullptr.
const CheckResult* FirstFailure(const std::vector<CheckResult>& checks);

// Runs the check body (which starts with ok=true); turns a PgError into a failed check unless the
// connection is gone (then it rethrows).
CheckResult TimedCheck(const std::string& name, const std::string& kind,
                       const std::function<void(CheckResult&)>& body);

// True for SQLSTATEs that mean the server or the connection is gone, not that a check failed.
bool IsConnectionError(const PgError& e);

// "a; b; c; and N more": at most max_items of a list, for a check's message.
std::string JoinLimited(const std::vector<std::string>& items, size_t max_items = 10);

}  // namespace safe_upgrade
