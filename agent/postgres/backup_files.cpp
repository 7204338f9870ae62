// Parsing what PostgreSQL's backup tools write: pg_basebackup's progress lines, backup_label and
// backup_manifest. See backup_files.h.
#include "postgres/backup_files.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>

namespace safe_upgrade {

std::optional<BasebackupProgress> ParseBasebackupProgress(const std::string& line) {
  static const std::regex re(R"(^\s*([0-9]+)/([0-9]+) kB \(([0-9]+)%\))");
  std::smatch m;
  if (!std::regex_search(line, m, re)) return std::nullopt;
  BasebackupProgress p;
  p.done_kb = std::stoull(m[1]);
  p.total_kb = std::stoull(m[2]);
  p.percent = std::min(100, std::stoi(m[3]));
  return p;
}

uint64_t ParseLsn(const std::string& lsn) {
  static const std::regex re("^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$");
  std::smatch m;
  if (!std::regex_match(lsn, m, re)) throw std::runtime_error("malformed LSN \"" + lsn + "\"");
  return (std::stoull(m[1], nullptr, 16) << 32) | std::stoull(m[2], nullptr, 16);
}

BackupLabelFacts ParseBackupLabel(const std::string& text) {
  static const std::regex start_re(R"(^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+))");
  static const std::regex tli_re(R"(^START TIMELINE: ([0-9]+))");
  BackupLabelFacts facts;
  std::istringstream in(text);
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_search(line, m, start_re)) facts.start_lsn = m[1];
    if (std::regex_search(line, m, tli_re)) facts.timeline = static_cast<uint32_t>(std::stoul(m[1]));
  }
  if (facts.start_lsn.empty()) throw std::runtime_error("backup_label has no START WAL LOCATION line");
  if (facts.timeline == 0) throw std::runtime_error("backup_label has no START TIMELINE line");
  return facts;
}

std::string ParseManifestStopLsn(const std::string& manifest_text) {
  auto manifest = nlohmann::json::parse(manifest_text);
  auto ranges = manifest.find("WAL-Ranges");
  if (ranges == manifest.end() || !ranges->is_array() || ranges->empty())
    throw std::runtime_error("backup_manifest has no WAL-Ranges");
  // The ranges run over the timelines the backup spanned; the backup stopped at the end of the
  // newest, which is the highest End-LSN whatever the listing order.
  std::string best;
  uint64_t best_pos = 0;
  for (const auto& r : *ranges) {
    std::string end = r.at("End-LSN").get<std::string>();
    uint64_t pos = ParseLsn(end);
    if (best.empty() || pos > best_pos) {
      best = end;
      best_pos = pos;
    }
  }
  return best;
}

}  // namespace safe_upgrade
