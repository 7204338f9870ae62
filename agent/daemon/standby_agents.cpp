// The standby agents' watcher (standby_agents.h).
#include "daemon/standby_agents.h"

#include <nlohmann/json.hpp>

#include "jobs/standbys.h"
#include "rpc/agent_client.h"

namespace safe_upgrade {

StandbyAgentsWatcher::StandbyAgentsWatcher(const AgentConfig& config, uint64_t system_identifier)
    : config_(config), system_identifier_(system_identifier) {
  if (config_.standbys.empty()) return;
  PingAll();
  thread_ = std::thread([this] { Run(); });
}

StandbyAgentsWatcher::~StandbyAgentsWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string StandbyAgentsWatcher::CurrentJson() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (config_.standbys.empty()) return "[]";
  auto list = nlohmann::json::parse(json_);
  auto age = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - checked_at_);
  for (auto& standby : list) standby["checked_age_ms"] = age.count();
  std::string out = list.dump();
  if (out.size() <= kMaxJsonBytes) return out;
  // Errors are the long part: drop them first, then say it was cut.
  for (auto& standby : list) standby["error"] = standby["error"].get<std::string>().substr(0, 80);
  out = list.dump();
  return out.size() <= kMaxJsonBytes ? out : nlohmann::json::array({{{"truncated", true}}}).dump();
}

void StandbyAgentsWatcher::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, kInterval, [this] { return stopping_; })) {
    lock.unlock();
    PingAll();
    lock.lock();
  }
}

void StandbyAgentsWatcher::PingAll() {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& standby : config_.standbys) {
    nlohmann::json entry = {{"name", standby.name}, {"agent", standby.agent}, {"reachable", false},
                            {"error", ""}};
    try {
      auto client = ConnectStandbyAgent(config_, standby, kPingDeadlineMs);
      AgentPing ping;
      AgentCallError err = client->Ping(ping);
      if (err.ok) {
        entry["reachable"] = true;
        entry["role"] = ping.role;
        entry["system_identifier_matches"] = ping.system_identifier == system_identifier_;
        entry["in_recovery"] = ping.standby_signal;
        entry["pg_rewind"] = ping.pg_rewind_available;
        entry["data_directory"] = ping.data_directory;
        if (ping.role != "standby")
          entry["error"] = "the agent at " + standby.agent + " serves a " +
                           (ping.role.empty() ? std::string("primary (an older agent)") : ping.role) +
                           ", not a standby (agent.role = \"standby\" in its configuration)";
        else if (ping.system_identifier != system_identifier_)
          entry["error"] = "the agent at " + standby.agent + " serves another cluster (system identifier " +
                           std::to_string(ping.system_identifier) + ")";
      } else {
        entry["error"] = err.message;
      }
    } catch (const std::exception& e) {
      entry["error"] = e.what();
    }
    list.push_back(entry);
  }
  std::lock_guard<std::mutex> lock(mu_);
  json_ = list.dump();
  checked_at_ = std::chrono::steady_clock::now();
}

}  // namespace safe_upgrade
