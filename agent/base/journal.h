// The agent's journal: one JSON document per upgrade, rewritten atomically (fsync + rename) at
// every step, so that a restarted agent knows what was done and resumes or resolves it.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace safe_upgrade {

class Journal {
 public:
  explicit Journal(std::string dir);
  // The upgrade's document ({} when none).
  nlohmann::json Load(int64_t upgrade_id) const;
  // Read-modify-write under a lock, durable on return.
  nlohmann::json Update(int64_t upgrade_id, const std::function<void(nlohmann::json&)>& change);
  std::vector<int64_t> UpgradeIds() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string PathFor(int64_t upgrade_id) const;
  std::string dir_;
  mutable std::mutex mu_;
};

}  // namespace safe_upgrade
