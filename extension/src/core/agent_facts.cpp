// Fitting the agent's facts into the worker's shared-memory fields (see agent_facts.h).
#include "core/agent_facts.h"

#include <nlohmann/json.hpp>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {

using nlohmann::json;

std::string TruncateUtf8(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  // Back off continuation bytes (10xxxxxx) to the start of the character that does not fit.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

std::string FitBackendSummary(const std::string& json_text, size_t max_bytes) {
  auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  json doc = json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    std::string invalid = dump(json{{"invalid", true}});
    return invalid.size() <= max_bytes ? invalid : std::string();
  }
  std::string text = dump(doc);
  if (text.size() <= max_bytes) return text;
  if (doc.contains("backups")) {
    // The count of what is left out, added to what the agent already left out.
    size_t omitted = doc["backups"].is_array() ? doc["backups"].size() : 0;
    if (doc.contains("backups_omitted") && doc["backups_omitted"].is_number_unsigned())
      omitted += doc["backups_omitted"].get<size_t>();
    doc["backups"] = json::array();
    doc["backups_omitted"] = omitted;
    text = dump(doc);
    if (text.size() <= max_bytes) return text;
  }
  json minimal = {{"truncated", true}};
  if (doc.contains("ok") && doc["ok"].is_boolean()) minimal["ok"] = doc["ok"];
  text = dump(minimal);
  return text.size() <= max_bytes ? text : std::string();
}

namespace {

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// An agent's error may be a long stderr; its first line says enough for plan().
constexpr size_t kShortError = 200;

}  // namespace

std::string FitStandbyAgents(const std::string& json_text, size_t max_bytes) {
  json doc = json::parse(json_text, nullptr, false);
  // Not an array (FitJsonArray marks it), or one that fits as it is.
  if (doc.is_discarded() || !doc.is_array() || Dump(doc).size() <= max_bytes)
    return FitJsonArray(json_text, max_bytes);
  for (json& standby : doc)
    if (standby.is_object() && standby.contains("error") && standby["error"].is_string())
      standby["error"] = TruncateUtf8(standby["error"].get<std::string>(), kShortError);
  return FitJsonArray(Dump(doc), max_bytes);
}

std::string FitJsonArray(const std::string& json_text, size_t max_bytes) {
  auto fitting = [max_bytes](const json& j) { return Dump(j).size() <= max_bytes; };
  json doc = json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) {
    json invalid = json::array({{{"invalid", true}}});
    return fitting(invalid) ? Dump(invalid) : std::string();
  }
  if (fitting(doc)) return Dump(doc);
  // The leading elements that fit next to the marker that counts the others.
  json kept = json::array();
  for (size_t i = 0; i < doc.size(); ++i) {
    json attempt = kept;
    attempt.push_back(doc[i]);
    attempt.push_back({{"truncated", true}, {"omitted", doc.size() - i - 1}});
    if (!fitting(attempt)) break;
    kept.push_back(doc[i]);
  }
  kept.push_back({{"truncated", true}, {"omitted", doc.size() - kept.size()}});
  if (fitting(kept)) return Dump(kept);
  json minimal = json::array({{{"truncated", true}}});
  return fitting(minimal) ? Dump(minimal) : std::string();
}

std::string WithoutKey(const std::string& json_text, const std::string& key) {
  json doc = json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) return json_text;
  for (json& element : doc)
    if (element.is_object()) element.erase(key);
  return Dump(doc);
}

}  // namespace safe_upgrade
