// The primary agent's view of its standbys' agents ([[standby]] in its configuration), as Ping
// reports it: each is pinged on a thread of its own every few seconds, so that a standby agent
// that hangs never holds an RPC handler.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "base/config.h"

namespace safe_upgrade {

class StandbyAgentsWatcher {
 public:
  static constexpr std::chrono::seconds kInterval{3};
  static constexpr int kPingDeadlineMs = 2000;
  // Ping's standbys_json is at most this long (the worker keeps it in a 4 KB field).
  static constexpr size_t kMaxJsonBytes = 4000;

  // Pings every standby agent once before it returns, so the first Ping already knows them.
  StandbyAgentsWatcher(const AgentConfig& config, uint64_t system_identifier);
  ~StandbyAgentsWatcher();
  StandbyAgentsWatcher(const StandbyAgentsWatcher&) = delete;
  StandbyAgentsWatcher& operator=(const StandbyAgentsWatcher&) = delete;

  // A JSON array: one object per configured standby agent (name, agent, reachable, error, role,
  // system_identifier_matches, in_recovery, pg_rewind, data_directory, checked_age_ms).
  std::string CurrentJson() const;

 private:
  void Run();
  void PingAll();

  const AgentConfig& config_;
  uint64_t system_identifier_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string json_ = "[]";
  std::chrono::steady_clock::time_point checked_at_;
  std::thread thread_;
};

}  // namespace safe_upgrade
