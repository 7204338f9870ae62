// Reading an upgrade from the catalog and rendering it for people and for --json.
#include "upgrade_doc.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "output.h"

namespace safe_upgrade::cli {

using nlohmann::json;

namespace {

const json& Empty() {
  static const json empty = json::object();
  return empty;
}

const json& Member(const json& j, const char* key) {
  if (!j.is_object()) return Empty();
  auto it = j.find(key);
  return it == j.end() ? Empty() : *it;
}

std::string PlainItem(const json& item) {
  if (!item.is_object()) return JsonText(item);
  if (item.contains("object_identity") && item.contains("depends_on_identity"))
    return JsonString(item, "object_type") + " " + JsonString(item, "object_identity") + " -> " +
           JsonString(item, "depends_on_type") + " " + JsonString(item, "depends_on_identity");
  for (const char* key : {"identity", "object_identity", "object", "name", "signature"})
    if (item.contains(key) && item[key].is_string()) {
      std::string type = JsonString(item, "object_type", JsonString(item, "type"));
      return type.empty() ? item[key].get<std::string>() : type + " " + item[key].get<std::string>();
    }
  return item.dump();
}

// "a, b, c and 4 more" for short listings of drift items and the like.
std::string ListSome(const json& items, size_t max_items = 5) {
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

// Sub-second steps (hops, checks) read better in milliseconds.
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
    const json& items = Member(drift, k);
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
              ms ? Millis(*ms) : "", JsonText(Member(c, "message"))});
  }
  t.Print(out, indent);
}

// One line per database of the upgrade: where it started and how far it got.
void PrintDatabases(std::ostream& out, const json& databases, const std::string& indent) {
  if (!databases.is_array() || databases.empty()) return;
  Table t({"database", "from", "outcome", "error"});
  for (const auto& d : databases)
    t.AddRow({JsonString(d, "datname"), JsonString(d, "from_version"), JsonString(d, "outcome"),
              OneLine(JsonString(d, "error"))});
  out << indent << "databases:\n";
  t.Print(out, indent + "  ");
}

std::string Elapsed(double seconds) { return "+" + FormatDuration(seconds); }

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

}  // namespace

std::string UpgradeDoc::State() const { return JsonString(upgrade, "state"); }
std::string UpgradeDoc::Extname() const { return JsonString(upgrade, "extname"); }
std::string UpgradeDoc::FromVersion() const { return JsonString(upgrade, "from_version"); }
std::string UpgradeDoc::ToVersion() const { return JsonString(upgrade, "to_version"); }
const json& UpgradeDoc::Report() const { return Member(upgrade, "report"); }

std::optional<UpgradeDoc> LoadUpgradeDoc(PgConn& conn, int64_t id, int64_t after_event_id) {
  auto r = conn.Exec(
      "SELECT jsonb_build_object("
      "  'upgrade', to_jsonb(u),"
      "  'created_epoch', extract(epoch FROM u.created_at),"
      "  'updated_epoch', extract(epoch FROM u.updated_at),"
      "  'now_epoch', extract(epoch FROM clock_timestamp()),"
      "  'restore_point', (SELECT to_jsonb(rp) FROM safe_upgrade.restore_points rp WHERE rp.upgrade_id = "
      "u.id),"
      "  'databases', coalesce((SELECT jsonb_agg(to_jsonb(d) - 'upgrade_id' ORDER BY d.datname) "
      "FROM safe_upgrade.upgrade_databases d WHERE d.upgrade_id = u.id), '[]'),"
      "  'events', coalesce((SELECT jsonb_agg(to_jsonb(e) || jsonb_build_object('at_epoch', extract(epoch "
      "FROM e.at))"
      "                                       ORDER BY e.id)"
      "                      FROM safe_upgrade.events e WHERE e.upgrade_id = u.id AND e.id > $2::bigint), "
      "'[]'))::text "
      "FROM safe_upgrade.upgrades u WHERE u.id = $1::bigint",
      {std::to_string(id), std::to_string(after_event_id)});
  if (r.Empty() || !r.rows[0][0]) return std::nullopt;
  json j = json::parse(*r.rows[0][0]);
  UpgradeDoc doc;
  doc.id = id;
  doc.upgrade = j["upgrade"];
  doc.restore_point = j["restore_point"];
  doc.databases = j["databases"];
  doc.events = j["events"];
  doc.created_epoch = JsonNumber(j, "created_epoch").value_or(0);
  doc.updated_epoch = JsonNumber(j, "updated_epoch").value_or(0);
  doc.now_epoch = JsonNumber(j, "now_epoch").value_or(0);
  return doc;
}

std::optional<int64_t> CurrentUpgradeId(PgConn& conn) {
  auto r = conn.Exec(
      "SELECT id::text FROM safe_upgrade.upgrades "
      "ORDER BY (state IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled', "
      "'applying', "
      "'verifying', 'rolling_back')) DESC, id DESC LIMIT 1");
  if (r.Empty() || !r.rows[0][0]) return std::nullopt;
  return std::stoll(*r.rows[0][0]);
}

bool IsTerminalState(const std::string& state) {
  static const std::set<std::string> terminal = {"succeeded",   "validated",       "blocked",  "failed",
                                                 "rolled_back", "rollback_failed", "cancelled"};
  return terminal.count(state) > 0;
}

int ExitCodeForState(const std::string& state) {
  if (state == "succeeded" || state == "validated") return 0;
  if (state == "blocked") return 3;
  if (state == "rolled_back") return 4;
  if (state == "rollback_failed") return 5;
  return 1;
}

std::string StateMeaning(const std::string& state) {
  if (state == "queued") return "waiting for the scheduler (the background worker) to pick it up";
  if (state == "snapshotting") return "taking a verified base backup of production, the rollback target";
  if (state == "dry_running") return "rehearsing the upgrade and the health checks on a throwaway clone";
  if (state == "awaiting_approval")
    return "the dry run passed; waiting for approval before touching production";
  if (state == "scheduled") return "parking a rollback target, then the restore point and its archived WAL";
  if (state == "applying") return "running ALTER EXTENSION ... UPDATE on production, under lock limits";
  if (state == "verifying") return "running the health checks on production";
  if (state == "rolling_back") return "restoring production to the restore point (the server restarts)";
  if (state == "succeeded") return "the upgrade is applied and production passed its health checks";
  if (state == "validated") return "the dry run passed; production was not touched (dry run only)";
  if (state == "blocked") return "the dry run failed; production was not touched";
  if (state == "failed") return "the upgrade stopped before it could finish";
  if (state == "rolled_back") return "the upgrade failed on production and production was restored";
  if (state == "rollback_failed") return "the upgrade failed on production and so did the rollback";
  if (state == "cancelled") return "cancelled on request";
  return "";
}

std::optional<std::string> TransitionTarget(const json& event) {
  const json& detail = Member(event, "detail");
  if (!detail.is_object() || !detail.contains("to") || !detail.contains("from")) return std::nullopt;
  if (!detail["to"].is_string()) return std::nullopt;
  std::string to = detail["to"].get<std::string>();
  if (!IsTerminalState(to) && StateMeaning(to).empty()) return std::nullopt;  // not a state name
  return to;
}

std::vector<PhaseSpan> PhaseTimeline(const UpgradeDoc& doc) {
  std::vector<PhaseSpan> spans;
  PhaseSpan current{"queued", JsonString(doc.upgrade, "created_at"), doc.created_epoch, std::nullopt};
  auto open = [&](const std::string& state, const std::string& at, double epoch) {
    current.duration_s = std::max(0.0, epoch - current.start_epoch);
    spans.push_back(current);
    current = PhaseSpan{state, at, epoch, std::nullopt};
  };
  for (const auto& e : doc.events) {
    double at = JsonNumber(e, "at_epoch").value_or(doc.now_epoch);
    if (auto to = TransitionTarget(e)) {
      if (*to != current.state) open(*to, JsonString(e, "at"), at);
    } else if (JsonString(e, "phase") == doc.State() && IsTerminalState(doc.State()) &&
               current.state != doc.State()) {
      // The rollback writes its outcome as an event of the final phase, not as a transition.
      open(doc.State(), JsonString(e, "at"), at);
    }
  }
  if (current.state != doc.State() && !doc.State().empty())
    open(doc.State(), JsonString(doc.upgrade, "updated_at"), doc.updated_epoch);
  if (!IsTerminalState(current.state))
    current.duration_s = std::max(0.0, doc.now_epoch - current.start_epoch);
  spans.push_back(current);
  return spans;
}

json DocToJson(const UpgradeDoc& doc) {
  json phases = json::array();
  for (const auto& p : PhaseTimeline(doc))
    phases.push_back({{"state", p.state},
                      {"started_at", p.started_at},
                      {"duration_s", p.duration_s ? json(std::round(*p.duration_s * 1000) / 1000) : json()}});
  json events = json::array();
  for (const auto& e : doc.events) {
    json copy = e;
    copy.erase("at_epoch");
    events.push_back(copy);
  }
  std::string state = doc.State();
  const json& rollback = Member(doc.Report(), "rollback");
  json window = Member(rollback, "data_loss_window");
  return {{"id", doc.id},
          {"extname", doc.Extname()},
          {"from_version", doc.FromVersion()},
          {"to_version", doc.ToVersion()},
          {"state", state},
          {"terminal", IsTerminalState(state)},
          {"exit_code", IsTerminalState(state) ? json(ExitCodeForState(state)) : json()},
          {"error", Member(doc.upgrade, "error").is_string() ? doc.upgrade["error"] : json()},
          {"options", Member(doc.upgrade, "options")},
          {"created_at", Member(doc.upgrade, "created_at")},
          {"updated_at", Member(doc.upgrade, "updated_at")},
          {"progress", doc.upgrade.contains("progress") ? doc.upgrade["progress"] : json()},
          {"phases", phases},
          {"restore_point", doc.restore_point},
          {"databases", doc.databases},
          {"data_loss_window", window.is_object() && !window.empty() ? window : json()},
          {"report", doc.Report()},
          {"events", events}};
}

void PrintDryRunSummary(std::ostream& out, const json& dry_run) {
  if (!dry_run.is_object() || dry_run.empty()) return;
  const json& hops = Member(dry_run, "hops");
  if (hops.is_array() && !hops.empty()) {
    out << "  update path rehearsed on the clone:";
    for (const auto& h : hops) {
      std::string where = JsonString(h, "datname");
      out << " " << (where.empty() ? "" : where + ": ") << JsonString(h, "from") << "->"
          << JsonString(h, "to");
      if (auto ms = JsonNumber(h, "duration_ms")) out << " (" << Millis(*ms) << ")";
    }
    out << "\n";
  }
  const json& checks = Member(dry_run, "checks");
  if (checks.is_array() && !checks.empty()) {
    out << "  health checks on the clone:\n";
    PrintChecks(out, checks, "    ");
  }
  const json& locks = Member(dry_run, "lock_profile");
  if (locks.is_array() && !locks.empty()) {
    std::set<std::string> strongest;
    for (const auto& l : locks) strongest.insert(JsonString(l, "mode"));
    out << "  locks the upgrade takes: " << locks.size() << " (";
    size_t i = 0;
    for (const auto& m : strongest) out << (i++ ? ", " : "") << m;
    out << ")\n";
  }
  PrintDrift(out, Member(dry_run, "drift"), "  ");
}

// "database app, reporting", or "its database" when the document does not say.
std::string DatabaseList(const UpgradeDoc& doc) {
  std::string names;
  if (doc.databases.is_array())
    for (const auto& d : doc.databases) names += (names.empty() ? "" : ", ") + JsonString(d, "datname");
  if (names.empty()) return "its database";
  return (doc.databases.size() == 1 ? "database " : "databases ") + names;
}

void PrintOutcome(std::ostream& out, const UpgradeDoc& doc) {
  std::string state = doc.State();
  std::string ext = doc.Extname();
  const json& report = doc.Report();
  std::string error = JsonString(doc.upgrade, "error");
  out << "outcome: " << state << " -- ";
  if (state == "succeeded")
    out << ext << " is now at " << doc.ToVersion() << " on production in " << DatabaseList(doc)
        << ", and its health checks pass\n";
  else if (state == "validated")
    out << "the upgrade of " << ext << " " << doc.FromVersion() << " -> " << doc.ToVersion()
        << " passed its dry run on a clone; production was not touched\n";
  else if (state == "blocked")
    out << "the dry run failed, so production was not touched\n";
  else if (state == "rolled_back")
    out << "the upgrade failed on production, and the whole cluster was restored to its restore point; "
        << ext << " is at " << doc.FromVersion() << " again in " << DatabaseList(doc) << "\n";
  else if (state == "rollback_failed")
    out << "the upgrade failed on production and the rollback did not complete; act now (see "
           "docs/troubleshooting.md, \"rollback failed\")\n";
  else
    out << StateMeaning(state) << "\n";
  if (!error.empty()) out << "  reason: " << error << "\n";
  PrintDatabases(out, doc.databases, "  ");

  Table phases({"phase", "started", "duration"});
  for (const auto& p : PhaseTimeline(doc))
    phases.AddRow({p.state, Elapsed(p.start_epoch - doc.created_epoch),
                   p.duration_s ? FormatDuration(*p.duration_s) : ""});
  out << "  phases:\n";
  phases.Print(out, "    ");
  auto timeline = PhaseTimeline(doc);
  double end =
      IsTerminalState(state) ? std::max(doc.updated_epoch, timeline.back().start_epoch) : doc.now_epoch;
  out << "  total: " << FormatDuration(std::max(0.0, end - doc.created_epoch)) << "\n";

  const json& dry_run = Member(report, "dry_run");
  PrintDrift(out, Member(dry_run, "drift"), "  ");
  if (state == "blocked") {
    const json& checks = Member(dry_run, "checks");
    if (checks.is_array())
      for (const auto& c : checks)
        if (c.is_object() && !c.value("ok", true))
          out << "  failed on the clone: " << JsonString(c, "name") << ": "
              << OneLine(JsonText(Member(c, "message"))) << "\n";
  }
  const json& rollback = Member(report, "rollback");
  if (state == "rolled_back" || state == "rollback_failed") {
    PrintDataLossWindow(out, Member(rollback, "data_loss_window"), "  ");
    std::string path = JsonString(rollback, "path");
    const json& downtime = Member(rollback, "downtime_s");
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
    if (state == "rolled_back" && !aside.empty())
      out << "  the upgraded data directory is kept in " << aside
          << " (remove it once you no longer need it)\n";
  }
  if (state == "blocked" || state == "failed") out << "  details: safe-upgrade status " << doc.id << "\n";
}

void PrintStatus(std::ostream& out, const UpgradeDoc& doc) {
  std::string state = doc.State();
  out << "upgrade " << doc.id << ": " << doc.Extname() << " " << doc.FromVersion() << " -> "
      << doc.ToVersion() << "\n";
  out << "  state:    " << state << " (" << StateMeaning(state) << ")\n";
  out << "  created:  " << ShortTimestamp(JsonString(doc.upgrade, "created_at")) << " by "
      << JsonString(doc.upgrade, "created_by", "?") << "\n";
  out << "  updated:  " << ShortTimestamp(JsonString(doc.upgrade, "updated_at")) << "\n";
  const json& options = Member(doc.upgrade, "options");
  if (options.is_object() && !options.empty()) out << "  options:  " << options.dump() << "\n";
  if (!IsTerminalState(state)) {
    PrintDatabases(out, doc.databases, "  ");
    std::string error = JsonString(doc.upgrade, "error");
    if (!error.empty()) out << "  last error: " << error << "\n";
    auto progress = JsonNumber(doc.upgrade, "progress");
    if (progress) out << "  progress: " << ProgressBar(*progress, "") << "\n";
    Table phases({"phase", "started", "duration"});
    for (const auto& p : PhaseTimeline(doc))
      phases.AddRow({p.state, Elapsed(p.start_epoch - doc.created_epoch),
                     p.duration_s ? FormatDuration(*p.duration_s) : ""});
    out << "  phases:\n";
    phases.Print(out, "    ");
    if (state == "awaiting_approval")
      out << "  approve it with: safe-upgrade approve " << doc.id << "   (or cancel: safe-upgrade cancel "
          << doc.id << ")\n";
  } else {
    PrintOutcome(out, doc);
  }

  if (doc.restore_point.is_object()) {
    const json& rp = doc.restore_point;
    out << "restore point: " << JsonString(rp, "name") << " at LSN " << JsonString(rp, "lsn") << " (timeline "
        << JsonText(Member(rp, "timeline")) << ", created " << ShortTimestamp(JsonString(rp, "created_at"))
        << ")\n";
  }
  const json& report = doc.Report();
  const json& dry_run = Member(report, "dry_run");
  if (dry_run.is_object() && !dry_run.empty()) {
    out << "dry run:\n";
    PrintDryRunSummary(out, dry_run);
  }
  for (const char* section : {"apply", "verify", "rollback"}) {
    const json& part = Member(report, section);
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

void PrintPlan(std::ostream& out, const json& plan) {
  if (!plan.is_object()) {
    PrintJsonValue(out, plan, "");
    return;
  }
  std::set<std::string> done;
  auto take = [&](std::initializer_list<const char*> keys) -> std::pair<std::string, const json*> {
    for (const char* k : keys)
      if (plan.contains(k) && !done.count(k)) {
        done.insert(k);
        return {k, &plan[k]};
      }
    return {"", nullptr};
  };

  // Verdict first: the answer to "may I upgrade?", with its reasons.
  auto [vkey, verdict] = take({"verdict"});
  if (verdict) {
    if (verdict->is_object()) {
      std::string word;
      for (const char* k : {"verdict", "decision", "status", "result"})
        if (verdict->contains(k) && (*verdict)[k].is_string()) word = (*verdict)[k].get<std::string>();
      if (word.empty() && verdict->contains("ok") && (*verdict)["ok"].is_boolean())
        word = (*verdict)["ok"].get<bool>() ? "ok" : "not ok";
      out << "verdict: " << (word.empty() ? "?" : word) << "\n";
      for (const char* k : {"reasons", "blockers", "warnings"}) {
        const json& items = Member(*verdict, k);
        if (!items.is_array() || items.empty()) continue;
        out << "  " << k << ":\n";
        for (const auto& r : items) out << "  - " << OneLine(PlainItem(r)) << "\n";
      }
      json rest = *verdict;
      for (const char* k :
           {"verdict", "decision", "status", "result", "ok", "reasons", "blockers", "warnings"})
        rest.erase(k);
      if (!rest.empty()) PrintJsonValue(out, rest, "  ");
    } else {
      out << "verdict: " << JsonText(*verdict) << "\n";
    }
  }
  for (const char* k : {"reasons", "blockers", "warnings", "hints"}) {
    auto [key, items] = take({k});
    if (!items) continue;
    if (items->is_array()) {
      if (items->empty()) continue;
      out << "  " << key << ":\n";
      for (const auto& r : *items) out << "  - " << OneLine(PlainItem(r)) << "\n";
    } else {
      out << "  " << key << ": " << JsonText(*items) << "\n";
    }
  }
  // The extension and versions in one line, when the plan names them.
  {
    std::string ext = JsonString(plan, "extname", JsonString(plan, "extension"));
    std::string from = JsonString(plan, "installed_version", JsonString(plan, "from_version"));
    std::string to = JsonString(plan, "target_version", JsonString(plan, "to_version"));
    if (!ext.empty() || !from.empty() || !to.empty()) {
      out << "\nextension: " << ext << "  installed " << (from.empty() ? "-" : from) << "  target "
          << (to.empty() ? "-" : to) << "\n";
      for (const char* k :
           {"extname", "extension", "installed_version", "from_version", "target_version", "to_version"})
        done.insert(k);
    }
  }
  struct Section {
    const char* title;
    std::initializer_list<const char*> keys;
  };
  const Section sections[] = {
      {"update path", {"update_path", "path", "update_paths"}},
      {"requires", {"requires", "required_extensions"}},
      {"required by", {"required_by", "dependent_extensions"}},
      {"dependent objects", {"dependent_objects", "user_objects", "dependents", "dependencies"}},
      {"PITR prerequisites", {"pitr", "pitr_prerequisites", "prerequisites"}},
      {"rollback cost", {"rollback", "rollback_cost"}},
  };
  for (const auto& s : sections) {
    auto [key, value] = take(s.keys);
    if (!value) continue;
    bool scalars = value->is_array() &&
                   std::all_of(value->begin(), value->end(), [](const json& v) { return v.is_primitive(); });
    if (value->is_primitive() || scalars) {
      // Short lists read best on one line; an update path as the hops it takes.
      std::string text;
      for (const auto& v : *value)
        text += (text.empty() ? "" : key == "update_path" ? " -> " : ", ") + JsonText(v);
      if (value->is_primitive()) text = JsonText(*value);
      out << "\n" << s.title << ": " << (text.empty() ? "(none)" : text) << "\n";
      continue;
    }
    out << "\n" << s.title << ":\n";
    PrintJsonValue(out, *value, "  ");
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
