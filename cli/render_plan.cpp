// The readable report of safe_upgrade.plan() (see renderers.h). The document is ours (plan() in
// sql/, keys documented in docs/usage.md): it is read by its keys, and whatever it gains later is
// still shown, generically, after the known sections.
#include <algorithm>
#include <ctime>
#include <set>
#include <string>

#include "output.h"
#include "render_parts.h"
#include "renderers.h"

namespace safe_upgrade::cli {

using nlohmann::json;

namespace {

std::string UtcTime(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  char buf[32];
  if (!gmtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm)) return "?";
  return buf;
}

// One line for pitr.backend: the kind, and for pgBackRest the stanza, the last check and the
// newest backup (the one the next snapshot builds on).
std::string BackendLine(const json& backend) {
  std::string kind = JsonString(backend, "kind");
  if (kind.empty()) return "unknown (the agent is unreachable)";
  if (kind != "pgbackrest") return kind;
  std::string line = "pgbackrest  stanza " + JsonString(backend, "stanza", "?");
  const json& ok = JsonMember(backend, "check_ok");
  if (ok.is_boolean() && ok.get<bool>())
    line += "  check ok";
  else if (ok.is_boolean())
    line += "  check FAILED: " + Truncate(OneLine(JsonString(backend, "problem", "no message")), 200);
  else
    line += "  check not run yet";
  const json& backups = JsonMember(backend, "backups");
  if (backups.is_array() && !backups.empty() && backups.back().is_object()) {
    const json& newest = backups.back();
    line += "  newest backup " + JsonString(newest, "label", "?") + " (" + JsonString(newest, "type", "?");
    if (auto at = JsonNumber(newest, "stopped_at")) line += ", " + UtcTime(static_cast<int64_t>(*at));
    line += ")";
  } else if (!JsonString(backend, "info_error").empty()) {
    line += "  info failed: " + Truncate(OneLine(JsonString(backend, "info_error")), 200);
  } else if (!JsonNumber(backend, "backups_omitted")) {
    line += "  no backup yet";
  }
  return line;
}

// What the agent knows of a standby's agent, in a word or two.
std::string StandbyAgentWord(const json& standby) {
  const json& has_agent = JsonMember(standby, "has_agent");
  if (!has_agent.is_boolean()) return "unknown";
  if (!has_agent.get<bool>()) return "none";
  const json& agent = JsonMember(standby, "agent");
  const json& reachable = JsonMember(agent, "reachable");
  if (!reachable.is_boolean() || !reachable.get<bool>()) return "unreachable";
  const json& same_system = JsonMember(agent, "system_identifier_matches");
  if (same_system.is_boolean() && !same_system.get<bool>()) return "other cluster";
  const json& pg_rewind = JsonMember(agent, "pg_rewind");
  return pg_rewind.is_boolean() && !pg_rewind.get<bool>() ? "ok, no pg_rewind" : "ok";
}

// One line per standby: whether it streams, how far behind it replays, and whether a rollback
// could bring it along (rewind, agent).
void PrintStandbys(std::ostream& out, const json& standbys) {
  if (!standbys.is_array() || standbys.empty()) {
    out << "\nstandbys: (none)\n";
    return;
  }
  Table t({"standby", "state", "sync", "replay lag", "rewindable", "agent"});
  for (const auto& s : standbys) {
    if (!s.is_object()) continue;
    auto lag = JsonNumber(s, "replay_lag_seconds");
    const json& rewindable = JsonMember(s, "rewindable");
    t.AddRow({JsonString(s, "name"), JsonString(s, "state", "-"), JsonString(s, "sync_state", "-"),
              lag ? FormatDuration(*lag) : "-",
              rewindable.is_boolean() ? (rewindable.get<bool>() ? "yes" : "no") : "-", StandbyAgentWord(s)});
  }
  out << "\nstandbys:\n";
  t.Print(out, "  ");
}

}  // namespace

void PrintPlan(std::ostream& out, const json& plan) {
  if (!plan.is_object()) {
    PrintJsonValue(out, plan, "");
    return;
  }
  // Each key is shown once: by its section, or at the end with the keys no section knows.
  std::set<std::string> done;
  auto take = [&](const char* key) -> const json* {
    if (!plan.contains(key) || done.count(key)) return nullptr;
    done.insert(key);
    return &plan[key];
  };

  // Verdict first: the answer to "may I upgrade?" ("ok" or "blocked"), with its reasons.
  if (const json* verdict = take("verdict")) out << "verdict: " << JsonText(*verdict) << "\n";
  for (const char* key : {"reasons", "hints"}) {
    const json* items = take(key);
    if (!items) continue;
    if (items->is_array()) {
      if (items->empty()) continue;
      out << "  " << key << ":\n";
      for (const auto& r : *items) out << "  - " << OneLine(PlainItem(r)) << "\n";
    } else {
      out << "  " << key << ": " << JsonText(*items) << "\n";
    }
  }
  // What does not block but should be known (standbys a rollback leaves behind), each with its hint.
  if (const json* warnings = take("warnings"); warnings && warnings->is_array() && !warnings->empty()) {
    const json* hints = take("warning_hints");
    out << "  warnings (not blocking):\n";
    for (size_t i = 0; i < warnings->size(); ++i) {
      out << "  - " << OneLine(PlainItem((*warnings)[i])) << "\n";
      if (hints && hints->is_array() && i < hints->size())
        out << "    " << OneLine(PlainItem((*hints)[i])) << "\n";
    }
  } else {
    take("warning_hints");
  }
  // What the extension's community documents for its upgrades, and what the apply does about it.
  if (const json* notes = take("notes"); notes && notes->is_array() && !notes->empty()) {
    out << "  notes for this extension:\n";
    for (const auto& n : *notes) {
      out << "  - " << OneLine(JsonString(n, "note")) << " (" << JsonString(n, "source") << ")\n";
      std::string handled = JsonString(n, "handled");
      out << "    " << (handled.empty() ? "not handled by safe-upgrade: do it yourself" : "handled: " + handled)
          << "\n";
    }
  }
  // The extension and versions in one line (installed_version is null when the databases differ).
  {
    std::string ext = JsonString(plan, "extname");
    std::string from = JsonString(plan, "installed_version");
    std::string to = JsonString(plan, "target_version");
    if (!ext.empty() || !from.empty() || !to.empty()) {
      out << "\nextension: " << ext << "  installed " << (from.empty() ? "-" : from) << "  target "
          << (to.empty() ? "-" : to) << "\n";
      for (const char* k : {"extname", "installed_version", "target_version"}) done.insert(k);
    }
  }
  // Where the snapshot and the WAL a rollback replays live (the details stay in the PITR section).
  if (plan.contains("pitr") && plan["pitr"].is_object() && plan["pitr"].contains("backend"))
    out << "backend: " << BackendLine(plan["pitr"]["backend"]) << "\n";
  // What archive_command runs, in order; every part must succeed for a segment to count archived.
  if (plan.contains("pitr") && plan["pitr"].is_object() && plan["pitr"].contains("archive_chain") &&
      plan["pitr"]["archive_chain"].is_array() && !plan["pitr"]["archive_chain"].empty()) {
    std::string chain;
    for (const auto& part : plan["pitr"]["archive_chain"])
      chain += (chain.empty() ? "" : " && ") + JsonString(part, "kind", "other");
    out << "archive_command runs: " << chain << "\n";
  }
  struct Section {
    const char* title;
    const char* key;
  };
  const Section sections[] = {
      {"update path", "update_path"},      {"requires", "requires"},       {"required by", "required_by"},
      {"dependent objects", "dependents"}, {"PITR prerequisites", "pitr"}, {"rollback cost", "rollback"},
  };
  for (const auto& s : sections) {
    const json* value = take(s.key);
    if (!value) continue;
    bool scalars = value->is_array() &&
                   std::all_of(value->begin(), value->end(), [](const json& v) { return v.is_primitive(); });
    if (value->is_primitive() || scalars) {
      // Short lists read best on one line; an update path as the hops it takes.
      std::string text;
      for (const auto& v : *value)
        text += (text.empty() ? "" : std::string(s.key) == "update_path" ? " -> " : ", ") + JsonText(v);
      if (value->is_primitive()) text = JsonText(*value);
      out << "\n" << s.title << ": " << (text.empty() ? "(none)" : text) << "\n";
      continue;
    }
    out << "\n" << s.title << ":\n";
    PrintJsonValue(out, *value, "  ");
  }
  if (const json* standbys = take("standbys")) PrintStandbys(out, *standbys);
  // The same objects as in the warnings, with the statement that drops them.
  if (const json* breakage = take("predicted_breakage"); breakage && breakage->is_array()) {
    out << "\npredicted breakage (read from the update scripts; the dry run decides):"
        << (breakage->empty() ? " none\n" : "\n");
    for (const auto& b : *breakage)
      out << "  - " << JsonString(b, "datname") << ": " << OneLine(JsonString(b, "message")) << "\n    ("
          << OneLine(JsonString(b, "statement")) << ")\n";
  }
  // The server's processes on an old copy of the extension's library (a package replaced it).
  if (const json* stale = take("stale_sessions"); stale && stale->is_array()) {
    out << "\nsessions on a replaced library (they keep the old code until they reconnect):"
        << (stale->empty() ? " none\n" : "\n");
    for (const auto& s : *stale) {
      std::string where = JsonString(s, "backend_type");
      for (const char* key : {"datname", "usename", "application_name", "state"})
        if (!JsonString(s, key).empty()) where += ", " + JsonString(s, key);
      out << "  - pid " << JsonText(s.value("pid", json())) << " (" << where << "): " << JsonString(s, "library")
          << " " << JsonString(s, "reason") << "\n";
    }
  }
  for (auto it = plan.begin(); it != plan.end(); ++it) {
    if (done.count(it.key())) continue;
    std::string title = it.key();
    std::replace(title.begin(), title.end(), '_', ' ');
    if (it->is_primitive()) {
      out << "\n" << title << ": " << (it->is_null() ? "none" : JsonText(*it)) << "\n";
    } else {
      out << "\n" << title << ":\n";
      PrintJsonValue(out, *it, "  ");
    }
  }
}

}  // namespace safe_upgrade::cli
