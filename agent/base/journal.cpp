// Journal implementation: the files, their lock and their atomic rewrite; the document's JSON is
// journal_json.cpp's.
#include "base/journal.h"

#include <filesystem>

#include "base/fs_util.h"

namespace safe_upgrade {

Journal::Journal(std::string dir) : dir_(std::move(dir)) { EnsureDir(dir_, 0700); }

std::string Journal::PathFor(int64_t upgrade_id) const {
  return JoinPath(dir_, "upgrade-" + std::to_string(upgrade_id) + ".json");
}

std::optional<JournalDoc> Journal::Read(const std::string& path) const {
  if (!PathExists(path)) return std::nullopt;
  try {
    return JournalDocFromJson(nlohmann::json::parse(ReadFile(path)));
  } catch (const std::exception& e) {
    throw JournalError("journal file " + path + " cannot be read: " + e.what());
  }
}

std::optional<JournalDoc> Journal::Find(int64_t upgrade_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return Read(PathFor(upgrade_id));
}

JournalDoc Journal::Load(int64_t upgrade_id) const {
  JournalDoc doc = Find(upgrade_id).value_or(JournalDoc{});
  doc.upgrade_id = upgrade_id;
  return doc;
}

JournalDoc Journal::Update(int64_t upgrade_id, const std::function<void(JournalDoc&)>& change) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string path = PathFor(upgrade_id);
  JournalDoc doc = Read(path).value_or(JournalDoc{});
  doc.upgrade_id = upgrade_id;
  change(doc);
  AtomicWriteFile(path, ToJson(doc).dump(2) + "\n");
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
