// The outcome summary of a finished upgrade (see renderers.h).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "output.h"
#include "render_parts.h"
#include "renderers.h"
#include "state_words.h"
#include "timeline.h"

namespace safe_upgrade::cli {

using nlohmann::json;

namespace {

void PrintDataLossWindow(std::ostream& out, const json& window, const std::string& indent) {
  if (!window.is_object() || window.empty()) return;
  std::string from = JsonString(window, "restore_point_created_at");
  std::string to = JsonString(window, "rollback_started_at");
  out << indent << "data-loss window: every write committed after restore point "
      << JsonString(window, "restore_point", "?");
  if (!from.empty()) out << " (" << ShortTimestamp(from) << ")";
  out << " was discarded";
  if (!to.empty()) out << ", up to the rollback's start at " << ShortTimestamp(to);
  out << "\n";
  auto a = ParseTimestamp(from), b = ParseTimestamp(to);
  std::vector<std::string> facts;
  if (a && b) facts.push_back(FormatDuration(*b - *a) + " of writes");
  if (auto bytes = JsonNumber(window, "wal_bytes_discarded"))
    facts.push_back(FormatBytes(*bytes) + " of WAL");
  if (auto xids = JsonNumber(window, "transaction_ids_discarded"); xids && *xids >= 0)
    facts.push_back("about " + std::to_string(static_cast<long long>(*xids)) + " transaction ids");
  if (!facts.empty()) {
    out << indent << "  (";
    for (size_t i = 0; i < facts.size(); ++i) out << (i ? ", " : "") << facts[i];
    out << ")\n";
  }
}

// "database app, reporting", or "its database" when the document does not say.
std::string DatabaseList(const UpgradeDoc& doc) {
  std::string names;
  if (doc.databases.is_array())
    for (const auto& d : doc.databases) names += (names.empty() ? "" : ", ") + JsonString(d, "datname");
  if (names.empty()) return "its database";
  return (doc.databases.size() == 1 ? "database " : "databases ") + names;
}

}  // namespace

void PrintOutcome(std::ostream& out, const UpgradeDoc& doc) {
  std::string state = doc.State();
  std::string ext = doc.Extname();
  const json& report = doc.Report();
  std::string error = JsonString(doc.upgrade, "error");
  out << "outcome: " << state << " -- ";
  if (StateIs(state, UpgradeState::kSucceeded))
    out << ext << " is now at " << doc.ToVersion() << " on production in " << DatabaseList(doc)
        << ", and its health checks pass\n";
  else if (StateIs(state, UpgradeState::kValidated))
    out << "the upgrade of " << ext << " " << doc.FromVersion() << " -> " << doc.ToVersion()
        << " passed its dry run on a clone; production was not touched\n";
  else if (StateIs(state, UpgradeState::kBlocked))
    out << "the dry run failed, so production was not touched\n";
  else if (StateIs(state, UpgradeState::kRolledBack))
    out << "the upgrade failed on production, and the whole cluster was restored to its restore point; "
        << ext << " is at " << doc.FromVersion() << " again in " << DatabaseList(doc) << "\n";
  else if (StateIs(state, UpgradeState::kRollbackFailed))
    out << "the upgrade failed on production and the rollback did not complete; act now (see "
           "docs/troubleshooting.md, \"rollback failed\")\n";
  else
    out << StateMeaning(state) << "\n";
  if (!error.empty()) out << "  reason: " << error << "\n";
  PrintDatabases(out, doc.databases, "  ");
  PrintUpgradeStandbys(out, doc.standbys, "  ");
  // Sessions the apply left on an old copy of the extension's library, and those it ended.
  const json& apply = JsonMember(report, "apply");
  if (const json& stale = JsonMember(apply, "stale_sessions"); stale.is_array() && !stale.empty()) {
    std::string pids;
    for (const auto& s : stale) pids += (pids.empty() ? "" : ", ") + JsonText(s.value("pid", json()));
    const json& recycled = JsonMember(apply, "recycled_sessions");
    out << "  sessions on the old library after the apply: " << stale.size() << " (pid " << pids
        << "); recycle_sessions " << JsonString(recycled, "mode", "none") << " ended "
        << JsonText(recycled.value("count", json(0))) << "\n";
  }

  auto timeline = PhaseTimeline(doc);
  PrintPhases(out, doc, timeline);
  double end =
      IsTerminalState(state) ? std::max(doc.updated_epoch, timeline.back().start_epoch) : doc.now_epoch;
  out << "  total: " << FormatDuration(std::max(0.0, end - doc.created_epoch)) << "\n";

  const json& dry_run = JsonMember(report, "dry_run");
  PrintDrift(out, JsonMember(dry_run, "drift"), "  ");
  if (StateIs(state, UpgradeState::kBlocked)) {
    const json& checks = JsonMember(dry_run, "checks");
    if (checks.is_array())
      for (const auto& c : checks)
        if (c.is_object() && !c.value("ok", true))
          out << "  failed on the clone: " << JsonString(c, "name") << ": "
              << OneLine(JsonText(JsonMember(c, "message"))) << "\n";
  }
  const json& rollback = JsonMember(report, "rollback");
  if (StateIs(state, UpgradeState::kRolledBack) || StateIs(state, UpgradeState::kRollbackFailed)) {
    PrintDataLossWindow(out, JsonMember(rollback, "data_loss_window"), "  ");
    std::string path = JsonString(rollback, "path");
    const json& downtime = JsonMember(rollback, "downtime_s");
    if (!path.empty()) {
      out << "  rolled back through the " << path;
      if (downtime.is_number() && downtime.get<double>() >= 0) {
        char secs[32];
        snprintf(secs, sizeof secs, "%.1f", downtime.get<double>());
        out << "; the server was down for " << secs << " s";
      }
      out << "\n";
    }
    std::string aside = JsonString(rollback, "failed_data_directory");
    if (StateIs(state, UpgradeState::kRolledBack) && !aside.empty())
      out << "  the upgraded data directory is kept in " << aside
          << " (remove it once you no longer need it)\n";
  }
  if (StateIs(state, UpgradeState::kBlocked) || StateIs(state, UpgradeState::kFailed))
    out << "  details: safe-upgrade status " << doc.id << "\n";
}

}  // namespace safe_upgrade::cli
