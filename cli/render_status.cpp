// The full status view of an upgrade (see renderers.h).
#include <string>

#include "output.h"
#include "render_parts.h"
#include "renderers.h"
#include "state_words.h"
#include "timeline.h"

namespace safe_upgrade::cli {

using nlohmann::json;

void PrintStatus(std::ostream& out, const UpgradeDoc& doc) {
  std::string state = doc.State();
  out << "upgrade " << doc.id << ": " << doc.Extname() << " " << doc.FromVersion() << " -> "
      << doc.ToVersion() << "\n";
  out << "  state:    " << state << " (" << StateMeaning(state) << ")\n";
  out << "  created:  " << ShortTimestamp(JsonString(doc.upgrade, "created_at")) << " by "
      << JsonString(doc.upgrade, "created_by", "?") << "\n";
  out << "  updated:  " << ShortTimestamp(JsonString(doc.upgrade, "updated_at")) << "\n";
  const json& options = JsonMember(doc.upgrade, "options");
  if (options.is_object() && !options.empty()) out << "  options:  " << options.dump() << "\n";
  if (!IsTerminalState(state)) {
    PrintDatabases(out, doc.databases, "  ");
    PrintUpgradeStandbys(out, doc.standbys, "  ");
    std::string error = JsonString(doc.upgrade, "error");
    if (!error.empty()) out << "  last error: " << error << "\n";
    auto progress = JsonNumber(doc.upgrade, "progress");
    if (progress) out << "  progress: " << ProgressBar(*progress, "") << "\n";
    PrintPhases(out, doc, PhaseTimeline(doc));
    if (StateIs(state, UpgradeState::kAwaitingApproval))
      out << "  approve it with: safe-upgrade approve " << doc.id << "   (or cancel: safe-upgrade cancel "
          << doc.id << ")\n";
  } else {
    PrintOutcome(out, doc);
  }

  if (doc.restore_point.is_object()) {
    const json& rp = doc.restore_point;
    out << "restore point: " << JsonString(rp, "name") << " at LSN " << JsonString(rp, "lsn") << " (timeline "
        << JsonText(JsonMember(rp, "timeline")) << ", created "
        << ShortTimestamp(JsonString(rp, "created_at")) << ")\n";
  }
  const json& report = doc.Report();
  const json& dry_run = JsonMember(report, "dry_run");
  if (dry_run.is_object() && !dry_run.empty()) {
    out << "dry run:\n";
    PrintDryRunSummary(out, dry_run);
  }
  for (const char* section : {"apply", "verify", "rollback"}) {
    const json& part = JsonMember(report, section);
    if (!part.is_object() || part.empty()) continue;
    out << section << ":\n";
    if (std::string(section) == "verify" && part.contains("checks")) {
      PrintChecks(out, part["checks"], "  ");
      json rest = part;
      rest.erase("checks");
      if (!rest.empty()) PrintJsonValue(out, rest, "  ");
    } else {
      PrintJsonValue(out, part, "  ");
    }
  }
  if (doc.events.is_array() && !doc.events.empty()) {
    out << "events:\n";
    Table t({"time", "phase", "level", "message"});
    for (const auto& e : doc.events)
      t.AddRow({ShortTimestamp(JsonString(e, "at")).substr(11), JsonString(e, "phase"),
                JsonString(e, "level"), JsonString(e, "message")});
    t.Print(out, "  ", 110);
  }
}

}  // namespace safe_upgrade::cli
