// pgBackRest's commands, run for the pgbackrest backend.
#include "postgres/pgbackrest.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "base/fs_util.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

uint32_t TimelineOfSegment(const std::string& segment) {
  if (segment.size() < 8) return 0;
  try {
    return static_cast<uint32_t>(std::stoul(segment.substr(0, 8), nullptr, 16));
  } catch (const std::exception&) {
    return 0;
  }
}

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

uint64_t Num(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<uint64_t>() : 0;
}

}  // namespace

json PgBackRestBackup::ToJson() const {
  return {{"label", label},
          {"type", type},
          {"prior", prior},
          {"start_lsn", start_lsn},
          {"stop_lsn", stop_lsn},
          {"archive_start", archive_start},
          {"archive_stop", archive_stop},
          {"timeline", timeline},
          {"size_bytes", size_bytes},
          {"repo_bytes", repo_bytes},
          {"repo_delta_bytes", repo_delta_bytes},
          {"stopped_at", stopped_at},
          {"error", error}};
}

const PgBackRestBackup* PgBackRestStanza::Find(const std::string& label) const {
  for (const auto& b : backups)
    if (b.label == label) return &b;
  return nullptr;
}

json PgBackRestStanza::ToJson() const {
  json b = json::array();
  for (const auto& backup : backups) b.push_back(backup.ToJson());
  return {{"ok", ok},
          {"status", status},
          {"system_identifier", std::to_string(system_identifier)},
          {"archive_id", archive_id},
          {"archive_max", archive_max},
          {"repos", repos},
          {"backups", b}};
}

PgBackRestStanza ParsePgBackRestInfo(const std::string& json_text, const std::string& stanza) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    throw PgBackRestError(std::string("pgbackrest info printed no JSON: ") + e.what());
  }
  if (!doc.is_array()) throw PgBackRestError("pgbackrest info printed no list of stanzas");
  for (const auto& s : doc) {
    if (Str(s, "name") != stanza) continue;
    PgBackRestStanza out;
    const json& status = s.value("status", json::object());
    out.status = Str(status, "message");
    out.status_code = status.value("code", -1);
    out.ok = out.status_code == 0;
    // The newest database history entry is the cluster the stanza now serves.
    for (const auto& db : s.value("db", json::array()))
      if (db.contains("system-id") && db["system-id"].is_number()) out.system_identifier = db["system-id"];
    for (const auto& a : s.value("archive", json::array())) {
      out.archive_id = Str(a, "id");
      out.archive_max = Str(a, "max");
    }
    for (const auto& r : s.value("repo", json::array()))
      out.repos.push_back({{"key", r.value("key", 0)},
                           {"status", Str(r.value("status", json::object()), "message")},
                           {"cipher", Str(r, "cipher")}});
    for (const auto& b : s.value("backup", json::array())) {
      PgBackRestBackup backup;
      backup.label = Str(b, "label");
      backup.type = Str(b, "type");
      backup.prior = Str(b, "prior");
      const json& lsn = b.value("lsn", json::object());
      backup.start_lsn = Str(lsn, "start");
      backup.stop_lsn = Str(lsn, "stop");
      const json& archive = b.value("archive", json::object());
      backup.archive_start = Str(archive, "start");
      backup.archive_stop = Str(archive, "stop");
      backup.timeline = TimelineOfSegment(backup.archive_start);
      const json& info = b.value("info", json::object());
      backup.size_bytes = Num(info, "size");
      backup.repo_bytes = Num(info.value("repository", json::object()), "size");
      backup.repo_delta_bytes = Num(info.value("repository", json::object()), "delta");
      backup.stopped_at = static_cast<int64_t>(Num(b.value("timestamp", json::object()), "stop"));
      backup.error = b.value("error", false);
      out.backups.push_back(backup);
    }
    return out;
  }
  throw PgBackRestError("pgbackrest info does not know stanza \"" + stanza + "\"");
}

PgBackRest::PgBackRest(const AgentConfig& config) : config_(config) {}

std::string PgBackRest::Describe() const { return "pgBackRest stanza \"" + config_.backend.stanza + "\""; }

std::vector<std::string> PgBackRest::Argv(const std::string& command, std::vector<std::string> options,
                                          std::vector<std::string> args) const {
  std::vector<std::string> argv = {config_.backend.binary};
  if (!config_.backend.config.empty()) argv.push_back("--config=" + config_.backend.config);
  argv.push_back("--stanza=" + config_.backend.stanza);
  // Errors and warnings on stderr (ProcessResult::Describe quotes them), stdout for --output.
  argv.push_back("--log-level-console=off");
  argv.push_back("--log-level-stderr=warn");
  for (auto& o : options) argv.push_back(std::move(o));
  argv.push_back(command);
  for (auto& a : args) argv.push_back(std::move(a));
  return argv;
}

ProcessResult PgBackRest::Run(const std::string& command, std::vector<std::string> options,
                              std::chrono::seconds timeout, std::vector<std::string> args) const {
  ProcessOptions opt;
  opt.env["LC_ALL"] = "C";
  opt.timeout = timeout;
  opt.low_priority = command == "backup" || command == "restore" || command == "verify";
  ProcessResult r;
  try {
    r = RunProcess(Argv(command, std::move(options), std::move(args)), opt);
  } catch (const std::exception& e) {
    throw PgBackRestError("could not run " + config_.backend.binary + " " + command + ": " + e.what());
  }
  if (!r.Ok()) throw PgBackRestError(Describe() + ": " + r.Describe("pgbackrest " + command));
  return r;
}

void PgBackRest::Check(std::chrono::seconds timeout) const {
  Run("check", {"--archive-timeout=" + std::to_string(std::max<int64_t>(1, timeout.count()))},
      timeout + std::chrono::seconds(30));
}

PgBackRestStanza PgBackRest::Info() const {
  return ParsePgBackRestInfo(Run("info", {"--output=json"}, std::chrono::seconds(120)).out,
                             config_.backend.stanza);
}

PgBackRestBackup PgBackRest::Backup(const std::string& type, bool fast_checkpoint,
                                    std::chrono::seconds timeout) const {
  std::vector<std::string> before;
  for (const auto& b : Info().backups) before.push_back(b.label);
  Run("backup",
      {"--type=" + type, std::string("--start-fast=") + (fast_checkpoint ? "y" : "n"), "--archive-copy",
       "--archive-check"},
      timeout);
  PgBackRestStanza after = Info();
  // The newest backup that was not there before is ours (pgBackRest takes one backup of a
  // stanza at a time, under its lock).
  for (auto it = after.backups.rbegin(); it != after.backups.rend(); ++it)
    if (std::find(before.begin(), before.end(), it->label) == before.end()) return *it;
  throw PgBackRestError(Describe() + ": pgbackrest backup succeeded but info lists no new backup");
}

void PgBackRest::Verify(const std::string& label, std::chrono::seconds timeout) const {
  Run("verify", {"--set=" + label}, timeout);
}

void PgBackRest::Restore(const PgBackRestRestore& restore, std::chrono::seconds timeout) const {
  if (PathExists(restore.dest) && !std::filesystem::is_empty(restore.dest))
    throw PgBackRestError("cannot restore into \"" + restore.dest + "\": it is not empty");
  EnsureDir(restore.dest, 0700);
  Run("restore", {"--set=" + restore.label, "--pg1-path=" + restore.dest, "--type=none"}, timeout);
}

bool PgBackRest::ArchiveGet(const std::string& name, const std::string& dest) const {
  ProcessOptions opt;
  opt.env["LC_ALL"] = "C";
  opt.timeout = std::chrono::seconds(300);
  ProcessResult r;
  try {
    r = RunProcess(Argv("archive-get", {}, {name, dest}), opt);
  } catch (const std::exception& e) {
    throw PgBackRestError("could not run " + config_.backend.binary + " archive-get: " + e.what());
  }
  if (r.Ok()) return true;
  // archive-get exits with 1 when the file is not in the archive; other codes are errors.
  if (r.exit_code == 1) return false;
  throw PgBackRestError(Describe() + ": " + r.Describe("pgbackrest archive-get " + name));
}

std::vector<std::string> PgBackRest::ArchivedSegments(const std::string& archive_id, uint32_t timeline,
                                                      const std::string& first,
                                                      const std::string& last) const {
  static const std::regex segment("[0-9A-F]{24}");
  std::vector<std::string> out;
  if (first.size() != 24 || last.size() != 24) return out;
  // The repository keeps segments in one directory per 4 GB: archive/<stanza>/<id>/<first 16>/.
  std::string dirs_from = first.substr(0, 16), dirs_to = last.substr(0, 16);
  std::string root = "archive/" + config_.backend.stanza + "/" + archive_id;
  json dirs = json::parse(Run("repo-ls", {"--output=json"}, std::chrono::seconds(120), {root}).out);
  for (const auto& [dir, entry] : dirs.items()) {
    if (dir.size() != 16 || dir < dirs_from || dir > dirs_to) continue;
    if (TimelineOfSegment(dir) != timeline) continue;
    json files =
        json::parse(Run("repo-ls", {"--output=json"}, std::chrono::seconds(120), {root + "/" + dir}).out);
    for (const auto& [file, meta] : files.items()) {
      std::string name = file.substr(0, 24);
      if (!std::regex_match(name, segment) || (file.size() > 24 && file[24] != '-')) continue;
      if (name >= first && name <= last) out.push_back(name);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string PgBackRest::RestoreCommand(const std::string& data_dir) const {
  std::string cmd = ShellQuote(config_.backend.binary);
  if (!config_.backend.config.empty()) cmd += " " + ShellQuote("--config=" + config_.backend.config);
  // PostgreSQL's %p is relative to the data directory recovering, and pgBackRest resolves it
  // against pg1-path.
  cmd += " " + ShellQuote("--pg1-path=" + data_dir);
  cmd += " " + ShellQuote("--stanza=" + config_.backend.stanza) + " archive-get %f \"%p\"";
  return cmd;
}

}  // namespace safe_upgrade

namespace safe_upgrade {

bool IsPgBackRestSnapshot(const nlohmann::json& meta) { return meta.value("method", "") == "pgbackrest"; }

void RestorePgBackRestSnapshot(const AgentConfig& config, const nlohmann::json& meta,
                               const std::string& dest) {
  const nlohmann::json& backup = meta.value("pgbackrest", nlohmann::json::object());
  std::string stanza = backup.value("stanza", ""), label = backup.value("label", "");
  if (!config.backend.IsPgBackRest() || config.backend.stanza != stanza)
    throw PgBackRestError("snapshot " + meta.value("snapshot_id", std::string("?")) + " is backup " + label +
                          " of pgBackRest stanza \"" + stanza + "\", but the agent's backend is " +
                          (config.backend.IsPgBackRest() ? "stanza \"" + config.backend.stanza + "\""
                                                         : std::string("\"local\"")));
  PgBackRest(config).Restore({label, dest}, std::chrono::seconds(std::max(60, config.job_timeout_s)));
}

}  // namespace safe_upgrade
