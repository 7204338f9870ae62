// The bounded stanza summary for Ping (see pgbackrest_summary.h).
#include "postgres/pgbackrest_summary.h"

#include <algorithm>

namespace safe_upgrade {
namespace {

using nlohmann::json;

json BackupSummary(const PgBackRestBackup& b) {
  json out = {{"label", b.label},           {"type", b.type},
              {"prior", b.prior},           {"stopped_at", b.stopped_at},
              {"size_bytes", b.size_bytes}, {"repo_bytes", b.repo_bytes}};
  if (b.error) out["error"] = true;
  return out;
}

// At most max_bytes of text, cut before a UTF-8 sequence rather than inside it.
std::string CutText(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

bool Fits(const json& j, size_t max_bytes) { return DumpSummary(j).size() <= max_bytes; }

}  // namespace

std::string DumpSummary(const json& summary) {
  return summary.dump(-1, ' ', false, json::error_handler_t::replace);
}

json PgBackRestSummary(const PgBackRestStanza& stanza, size_t max_bytes) {
  // A rollback restores a backup taken at begin(), which pgBackRest bases on the newest full
  // backup and what followed it: older backups serve no rollback and are not listed.
  size_t first = 0;
  for (size_t i = 0; i < stanza.backups.size(); ++i)
    if (stanza.backups[i].type == "full") first = i;
  json backups = json::array();
  for (size_t i = first; i < stanza.backups.size(); ++i) backups.push_back(BackupSummary(stanza.backups[i]));

  json out = {{"ok", stanza.ok},
              {"status", CutText(stanza.status, 200)},
              {"archive_id", stanza.archive_id},
              {"archive_max", stanza.archive_max},
              {"repos", stanza.repos},
              {"backups_total", stanza.backups.size()},
              {"backups", backups}};
  // A stanza without backups does not list its database yet: nothing to compare then.
  if (stanza.system_identifier != 0) out["system_identifier"] = std::to_string(stanza.system_identifier);
  size_t omitted = 0;
  // Keep the full backup (first) and the newest ones: drop the oldest after the full one.
  while (!Fits(out, max_bytes) && out["backups"].size() > 1) {
    out["backups"].erase(out["backups"].size() > 1 ? 1 : 0);
    out["backups_omitted"] = ++omitted;
  }
  if (!Fits(out, max_bytes) && !out["backups"].empty()) {
    omitted += out["backups"].size();
    out["backups"] = json::array();
    out["backups_omitted"] = omitted;
  }
  if (!Fits(out, max_bytes)) {
    out["repos"] = json::array();
    out["repos_omitted"] = true;
  }
  if (!Fits(out, max_bytes)) out = {{"ok", stanza.ok}, {"truncated", true}};
  return out;
}

std::string ProtoSafeText(const std::string& text, size_t max_bytes) {
  std::string valid =
      json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>();
  return CutText(valid, max_bytes);
}

json PgBackRestInfoFailure(const std::string& message, size_t max_bytes) {
  json out = {{"ok", false}, {"info_error", ""}};
  size_t room = max_bytes > DumpSummary(out).size() ? max_bytes - DumpSummary(out).size() : 0;
  // Escapes can make the text longer than it is: shorten until the dump fits.
  std::string text = CutText(message, room);
  for (out["info_error"] = text; !Fits(out, max_bytes) && !text.empty(); out["info_error"] = text)
    text = CutText(text, text.size() - std::max<size_t>(1, text.size() / 8));
  return out;
}

}  // namespace safe_upgrade
