// The host facts refresher: measures on its own thread what Ping reports.
#include "daemon/host_facts.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "base/fs_util.h"
#include "snapshots/retention.h"

namespace safe_upgrade {
namespace {

bool SameTime(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// A directory changed within the last second may change again within the same tick of the
// filesystem's clock, which its mtime would not show: it is scanned again until it is quiet.
bool RecentlyChanged(const struct timespec& mtime) {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec - mtime.tv_sec <= 1;
}

}  // namespace

HostFactsRefresher::HostFactsRefresher(const AgentConfig& config, const JobManager& jobs)
    : config_(config), jobs_(jobs) {
  try {
    Measure(true);
  } catch (const std::exception& e) {
    problem_ = e.what();
    spdlog::warn("could not measure the host facts Ping reports: {}", e.what());
  }
  thread_ = std::thread([this] { Run(); });
}

HostFactsRefresher::~HostFactsRefresher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HostFacts HostFactsRefresher::Current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return facts_;
}

void HostFactsRefresher::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, kTick, [this] { return stopping_; })) {
    lock.unlock();
    // Ping keeps answering with the last facts (and their age); the log says so once per problem.
    try {
      Measure(false);
      problem_.clear();
    } catch (const std::exception& e) {
      if (problem_ != e.what()) spdlog::warn("could not measure the host facts Ping reports: {}", e.what());
      problem_ = e.what();
    }
    lock.lock();
  }
}

void HostFactsRefresher::Measure(bool everything) {
  auto now = std::chrono::steady_clock::now();
  HostFacts next = Current();
  next.snapshot_free_bytes = FreeBytes(config_.snapshot_dir);
  next.data_free_bytes = FreeBytes(Dirname(config_.data_directory));
  next.wal_archive_writable = access(config_.wal_archive_dir.c_str(), W_OK) == 0;

  struct stat st {};
  struct timespec mtime {};
  if (stat(config_.wal_archive_dir.c_str(), &st) == 0) mtime = st.st_mtim;
  bool archive_changed = !SameTime(mtime, archive_mtime_) || RecentlyChanged(mtime);
  if (everything || archive_changed || now - scanned_at_ >= kRescan) {
    next.archive = SummarizeWalArchive(config_);
    archive_mtime_ = mtime;
    scanned_at_ = now;
  }

  uint64_t generation = jobs_.Generation();
  if (everything || generation != generation_ || now - probed_at_ >= kRescan) {
    next.method = ChooseSnapshotMethod(config_);
    auto needed = WalNeededFrom(config_);
    next.wal_needed_from = needed && next.archive.segment_bytes > 0
                               ? WalSegmentName(1, *needed, next.archive.segment_bytes)
                               : std::string();
    generation_ = generation;
    probed_at_ = now;
  }
  next.measured_at = now;
  std::lock_guard<std::mutex> lock(mu_);
  facts_ = std::move(next);
}

}  // namespace safe_upgrade
