// Snapshot retention implementation.
#include "snapshots/retention.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "base/fs_util.h"
#include "core/state_table.h"
#include "postgres/backup_files.h"
#include "postgres/catalog.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {

// A removal renames the snapshot to this suffix first, so a crash halfway through deleting it
// never leaves a directory that still looks like a usable snapshot.
constexpr const char* kRemovingSuffix = ".removing";

std::string MtimeIso8601(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  struct tm tm;
  gmtime_r(&st.st_mtime, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[80];
  snprintf(out, sizeof out, "%s.%03ldZ", buf, st.st_mtim.tv_nsec / 1000000);
  return out;
}

}  // namespace

std::vector<SnapshotEntry> ListSnapshots(const AgentConfig& config) {
  static const std::regex re("^snap-([1-9][0-9]{0,17})$");
  std::vector<SnapshotEntry> out;
  if (!IsDirectory(config.snapshot_dir)) return out;
  for (const auto& entry : fs::directory_iterator(config.snapshot_dir)) {
    std::string name = entry.path().filename().string();
    std::smatch m;
    if (!entry.is_directory() || !std::regex_match(name, m, re)) continue;
    SnapshotEntry s;
    s.id = name;
    s.upgrade_id = std::stoll(m[1]);
    std::string meta = SnapshotMetaPath(config, name);
    if (PathExists(meta)) {
      try {
        s.created_at = nlohmann::json::parse(ReadFile(meta)).value("created_at", "");
        s.complete = true;
      } catch (const std::exception&) {
        // unreadable metadata: treated as incomplete, aged by its mtime
      }
    }
    if (s.created_at.empty()) s.created_at = MtimeIso8601(entry.path().string());
    out.push_back(s);
  }
  std::sort(out.begin(), out.end(), [](const SnapshotEntry& a, const SnapshotEntry& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.upgrade_id < b.upgrade_id;
  });
  return out;
}

std::set<int64_t> InFlightUpgradeIds(PgConn& conn) { return UpgradeIdsInStates(conn, InFlightStateNames()); }

RetentionOutcome ApplySnapshotRetention(const AgentConfig& config, const std::set<int64_t>& in_flight,
                                        const std::string& keep_id) {
  RetentionOutcome outcome;
  if (IsDirectory(config.snapshot_dir)) {
    for (const auto& entry : fs::directory_iterator(config.snapshot_dir)) {
      std::string name = entry.path().filename().string();
      if (entry.is_directory() && name.size() > strlen(kRemovingSuffix) &&
          name.compare(name.size() - strlen(kRemovingSuffix), std::string::npos, kRemovingSuffix) == 0)
        RemoveTree(entry.path().string());
    }
  }
  auto snapshots = ListSnapshots(config);
  size_t limit = static_cast<size_t>(std::max(1, config.snapshot_retention));
  size_t count = snapshots.size();
  for (const auto& s : snapshots) {
    if (count <= limit) break;
    if (s.id == keep_id || in_flight.count(s.upgrade_id)) {
      outcome.kept_in_flight.push_back(s.id);
      continue;
    }
    std::string dir = SnapshotDir(config, s.id);
    std::string doomed = dir + kRemovingSuffix;
    DurableRename(dir, doomed);
    RemoveTree(doomed);
    outcome.removed.push_back(s.id);
    --count;
  }
  return outcome;
}

std::optional<uint64_t> WalNeededFrom(const AgentConfig& config) {
  std::optional<uint64_t> oldest;
  for (const auto& s : ListSnapshots(config)) {
    if (!s.complete) continue;
    uint64_t start = ParseLsn(LoadSnapshotMeta(config, s.id).value("backup_start_lsn", "0/0"));
    if (!oldest || start < *oldest) oldest = start;
  }
  return oldest;
}

}  // namespace safe_upgrade
