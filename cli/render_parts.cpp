// Shared rendering pieces (see render_parts.h).
#include "render_parts.h"

#include <cmath>

#include "output.h"

namespace safe_upgrade::cli {

using nlohmann::json;

namespace {

std::string Elapsed(double seconds) { return "+" + FormatDuration(seconds); }

}  // namespace

// One item of a listing: a dependency row as "type identity -> type identity", an object of the
// drift's "changed" list as "type identity", a string as itself.
std::string PlainItem(const json& item) {
  if (!item.is_object()) return JsonText(item);
  if (item.contains("depends_on_identity"))
    return JsonString(item, "object_type") + " " + JsonString(item, "object_identity") + " -> " +
           JsonString(item, "depends_on_type") + " " + JsonString(item, "depends_on_identity");
  if (item.contains("object_identity") && item["object_identity"].is_string()) {
    std::string type = JsonString(item, "object_type");
    return type.empty() ? item["object_identity"].get<std::string>()
                        : type + " " + item["object_identity"].get<std::string>();
  }
  return item.dump();
}

std::string ListSome(const json& items, size_t max_items) {
  std::string out;
  size_t n = 0;
  for (const auto& item : items) {
    if (n == max_items) {
      out += " and " + std::to_string(items.size() - n) + " more";
      break;
    }
    out += (n ? ", " : "") + PlainItem(item);
    ++n;
  }
  return out;
}

std::string Millis(double ms) {
  return ms < 1000 ? std::to_string(static_cast<long long>(std::llround(ms))) + " ms"
                   : FormatDuration(ms / 1000);
}

void PrintDrift(std::ostream& out, const json& drift, const std::string& indent) {
  if (!drift.is_object() || drift.empty()) return;  // no dry run got that far
  size_t total = 0;
  for (const char* k : {"added", "removed", "changed"})
    if (drift.contains(k) && drift[k].is_array()) total += drift[k].size();
  if (total == 0) {
    out << indent << "dependency drift: none (your objects depend on the extension as before)\n";
    return;
  }
  out << indent
      << "dependency drift (how your objects' dependencies on the extension changed, seen on the clone):\n";
  for (const char* k : {"added", "removed", "changed"}) {
    const json& items = JsonMember(drift, k);
    if (!items.is_array() || items.empty()) continue;
    out << indent << "  " << k << " (" << items.size() << "): " << ListSome(items) << "\n";
  }
}

void PrintChecks(std::ostream& out, const json& checks, const std::string& indent) {
  if (!checks.is_array() || checks.empty()) return;
  Table t({"database", "check", "kind", "result", "time", "message"});
  for (const auto& c : checks) {
    if (!c.is_object()) continue;
    bool ok = c.value("ok", false);
    auto ms = JsonNumber(c, "duration_ms");
    t.AddRow({JsonString(c, "datname"), JsonString(c, "name"), JsonString(c, "kind"), ok ? "ok" : "FAILED",
              ms ? Millis(*ms) : "", JsonText(JsonMember(c, "message"))});
  }
  t.Print(out, indent);
}

void PrintDatabases(std::ostream& out, const json& databases, const std::string& indent) {
  if (!databases.is_array() || databases.empty()) return;
  Table t({"database", "from", "with", "outcome", "error"});
  for (const auto& d : databases) {
    // The family members upgraded with the extension there.
    std::string with;
    for (const auto& m : JsonMember(d, "family"))
      with += (with.empty() ? "" : ", ") + JsonString(m, "extname");
    t.AddRow({JsonString(d, "datname"), JsonString(d, "from_version"), with.empty() ? "-" : with,
              JsonString(d, "outcome"), OneLine(JsonString(d, "error"))});
  }
  out << indent << "databases:\n";
  t.Print(out, indent + "  ");
}

void PrintUpgradeStandbys(std::ostream& out, const json& standbys, const std::string& indent) {
  if (!standbys.is_array() || standbys.empty()) return;
  Table t({"standby", "sync", "slot", "rewindable", "agent", "outcome", "error"});
  auto yes_no = [](const json& v) { return v.is_boolean() ? (v.get<bool>() ? "yes" : "no") : "unknown"; };
  for (const auto& s : standbys)
    t.AddRow({JsonString(s, "name"), JsonString(s, "sync_state", "-"), JsonString(s, "slot_name", "-"),
              yes_no(JsonMember(s, "rewindable")), yes_no(JsonMember(s, "has_agent")), JsonString(s, "outcome"),
              OneLine(JsonString(s, "error"))});
  out << indent << "standbys:\n";
  t.Print(out, indent + "  ");
}

void PrintPhases(std::ostream& out, const UpgradeDoc& doc, const std::vector<PhaseSpan>& timeline) {
  Table phases({"phase", "started", "duration"});
  for (const auto& p : timeline)
    phases.AddRow({p.state, Elapsed(p.start_epoch - doc.created_epoch),
                   p.duration_s ? FormatDuration(*p.duration_s) : ""});
  out << "  phases:\n";
  phases.Print(out, "    ");
}

}  // namespace safe_upgrade::cli
