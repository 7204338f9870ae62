// Removing clones, and the orphans of interrupted dry runs (see clone_removal.h).
#include "scratch/clone_removal.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "scratch/scratch_server.h"

namespace fs = std::filesystem;

namespace safe_upgrade {

std::string NormalPath(const std::string& path) { return fs::path(path).lexically_normal().string(); }

bool PathInside(const std::string& path, const std::string& dir) {
  std::string p = NormalPath(path), d = NormalPath(dir);
  if (!d.empty() && d.back() != '/') d += '/';
  return p.size() > d.size() && p.compare(0, d.size(), d) == 0;
}

void DestroyClone(int64_t upgrade_id, const AgentConfig& config, const std::string& dir,
                  const std::string& socket_dir) {
  if (!PathInside(dir, config.ClonesDir()) || fs::path(dir).filename().string().rfind(kClonePrefix, 0) != 0) {
    spdlog::error("upgrade {}: refusing to remove \"{}\": not a dry-run clone under {}", upgrade_id, dir,
                  config.ClonesDir());
    return;
  }
  StopScratchServer(upgrade_id, config.bin_dir, JoinPath(dir, "data"));
  if (PathExists(dir)) RemoveTree(dir);
  if (!socket_dir.empty() && !PathInside(socket_dir, dir) &&
      NormalPath(socket_dir).rfind(kTmpSocketPrefix, 0) == 0 && PathExists(socket_dir))
    RemoveTree(socket_dir);
}

void RemoveOrphanedClones(const AgentConfig& config, Journal& journal) {
  for (int64_t id : journal.UpgradeIds()) {
    JournalDoc doc;
    try {
      doc = journal.Load(id);
    } catch (const std::exception& e) {
      spdlog::error("upgrade {}: could not read the journal: {}", id, e.what());
      continue;
    }
    if (doc.clones.empty()) continue;
    std::vector<JournaledClone> kept;
    for (const auto& c : doc.clones) {
      const std::string& path = c.path;
      try {
        DestroyClone(id, config, path, c.socket_dir);
        spdlog::warn("upgrade {}: removed the dry-run clone {} (port {}) left by an interrupted dry run", id,
                     path, c.port);
      } catch (const std::exception& e) {
        spdlog::error("upgrade {}: could not remove the orphaned clone {}: {}", id, path, e.what());
        kept.push_back(c);
      }
    }
    journal.Update(id, [&](JournalDoc& d) { d.clones = kept; });
  }
  // Anything else under clones/ is scratch from a crash before the journal was written.
  if (!IsDirectory(config.ClonesDir())) return;
  for (const auto& entry : fs::directory_iterator(config.ClonesDir())) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind(kClonePrefix, 0) != 0) continue;
    int64_t id = 0;
    try {
      id = std::stoll(name.substr(std::string(kClonePrefix).size()));
    } catch (...) {
    }
    try {
      DestroyClone(id, config, entry.path().string(), "");
      spdlog::warn("upgrade {}: removed the leftover dry-run clone directory {}", id, entry.path().string());
    } catch (const std::exception& e) {
      spdlog::error("upgrade {}: could not remove the leftover clone directory {}: {}", id,
                    entry.path().string(), e.what());
    }
  }
}

}  // namespace safe_upgrade
