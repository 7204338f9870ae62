// The Patroni resumer's thread (patroni_resumer.h).
#include "daemon/patroni_resumer.h"

#include "jobs/patroni_maintenance.h"

namespace safe_upgrade {

PatroniResumer::PatroniResumer(const AgentConfig& config, Journal& journal, const JobManager& jobs)
    : config_(config), journal_(journal), jobs_(jobs) {
  if (config_.patroni.rest_api.empty()) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!wake_.wait_for(lock, kInterval, [this] { return stopping_; })) {
      lock.unlock();
      ResumePatroniForEndedUpgrades(config_, journal_, jobs_);
      lock.lock();
    }
  });
}

PatroniResumer::~PatroniResumer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace safe_upgrade
