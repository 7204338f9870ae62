// Check results and the frame of a built-in check (see check_result.h).
#include "checks/check_result.h"

#include "base/elapsed.h"

namespace safe_upgrade {

using nlohmann::json;

bool IsConnectionError(const PgError& e) {
  const std::string& s = e.sqlstate();
  return s.rfind("08", 0) == 0 || s == "57P01" || s == "57P02" || s == "57P03";
}

std::string JoinLimited(const std::vector<std::string>& items, size_t max_items) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) out += (i ? "; " : "") + items[i];
  if (items.size() > max_items) out += "; and " + std::to_string(items.size() - max_items) + " more";
  return out;
}

CheckResult TimedCheck(const std::string& name, const std::string& kind,
                       const std::function<void(CheckResult&)>& body) {
  CheckResult c;
  c.name = name;
  c.kind = kind;
  auto started = std::chrono::steady_clock::now();
  try {
    c.ok = true;
    body(c);
  } catch (const PgError& e) {
    if (IsConnectionError(e)) throw;
    c.ok = false;
    c.message = e.Full();
  }
  c.duration_ms = MsSince(started);
  return c;
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

}  // namespace safe_upgrade
