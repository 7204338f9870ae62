// Journal implementation.
#include "base/journal.h"

#include <filesystem>

#include "base/fs_util.h"

namespace safe_upgrade {

Journal::Journal(std::string dir) : dir_(std::move(dir)) { EnsureDir(dir_, 0700); }

std::string Journal::PathFor(int64_t upgrade_id) const {
  return JoinPath(dir_, "upgrade-" + std::to_string(upgrade_id) + ".json");
}

nlohmann::json Journal::Load(int64_t upgrade_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string path = PathFor(upgrade_id);
  if (!PathExists(path)) return nlohmann::json::object();
  return nlohmann::json::parse(ReadFile(path));
}

nlohmann::json Journal::Update(int64_t upgrade_id, const std::function<void(nlohmann::json&)>& change) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string path = PathFor(upgrade_id);
  nlohmann::json doc = PathExists(path) ? nlohmann::json::parse(ReadFile(path)) : nlohmann::json::object();
  doc["upgrade_id"] = upgrade_id;
  change(doc);
  AtomicWriteFile(path, doc.dump(2) + "\n");
  return doc;
}

std::vector<int64_t> Journal::UpgradeIds() const {
  std::vector<int64_t> ids;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("upgrade-", 0) == 0 && name.size() > 13 && name.substr(name.size() - 5) == ".json") {
      try {
        ids.push_back(std::stoll(name.substr(8, name.size() - 13)));
      } catch (...) {
      }
    }
  }
  return ids;
}

}  // namespace safe_upgrade
