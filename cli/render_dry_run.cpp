// The dry-run summary (see renderers.h).
#include <set>

#include "output.h"
#include "render_parts.h"
#include "renderers.h"

namespace safe_upgrade::cli {

using nlohmann::json;

void PrintDryRunSummary(std::ostream& out, const json& dry_run) {
  if (!dry_run.is_object() || dry_run.empty()) return;
  const json& hops = JsonMember(dry_run, "hops");
  if (hops.is_array() && !hops.empty()) {
    out << "  update path rehearsed on the clone:";
    for (const auto& h : hops) {
      std::string where = JsonString(h, "datname");
      std::string ext = JsonString(h, "extname");  // a family member's hop names its extension
      out << " " << (where.empty() ? "" : where + ": ") << (ext.empty() ? "" : ext + " ") << JsonString(h, "from")
          << "->" << JsonString(h, "to");
      if (auto ms = JsonNumber(h, "duration_ms")) out << " (" << Millis(*ms) << ")";
    }
    out << "\n";
  }
  const json& checks = JsonMember(dry_run, "checks");
  if (checks.is_array() && !checks.empty()) {
    out << "  health checks on the clone:\n";
    PrintChecks(out, checks, "    ");
  }
  const json& locks = JsonMember(dry_run, "lock_profile");
  if (locks.is_array() && !locks.empty()) {
    std::set<std::string> strongest;
    for (const auto& l : locks) strongest.insert(JsonString(l, "mode"));
    out << "  locks the upgrade takes: " << locks.size() << " (";
    size_t i = 0;
    for (const auto& m : strongest) out << (i++ ? ", " : "") << m;
    out << ")\n";
  }
  PrintDrift(out, JsonMember(dry_run, "drift"), "  ");
}

}  // namespace safe_upgrade::cli
