// Resumes Patroni once the upgrades the agent paused it for have ended (jobs/patroni_maintenance.h),
// on a thread of its own every kInterval: an upgrade can end in the worker (failed, cancelled) as
// well as in one of the agent's jobs, so the catalog, not a job, says when.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"

namespace safe_upgrade {

class PatroniResumer {
 public:
  static constexpr std::chrono::seconds kInterval{2};
  // Starts no thread when [patroni] is not configured.
  PatroniResumer(const AgentConfig& config, Journal& journal, const JobManager& jobs);
  ~PatroniResumer();
  PatroniResumer(const PatroniResumer&) = delete;
  PatroniResumer& operator=(const PatroniResumer&) = delete;

 private:
  const AgentConfig& config_;
  Journal& journal_;
  const JobManager& jobs_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace safe_upgrade
