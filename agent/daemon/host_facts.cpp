// The host facts refresher: measures on its own thread what Ping reports.
#include "daemon/host_facts.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "base/fs_util.h"
#include "checks/stale_libraries.h"
#include "postgres/pgbackrest.h"
#include "postgres/pgbackrest_summary.h"
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
  // Ping names the backend even when the first measurement fails.
  facts_.backend.kind = config.backend.kind;
  facts_.backend.stanza = config.backend.stanza;
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

  // With the pgbackrest backend there may be no archive of the agent's own (wal_archive_dir ""):
  // nothing to measure, and "" must not be taken for the current directory.
  if (!config_.wal_archive_dir.empty()) {
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
  } else {
    next.wal_archive_writable = false;
    next.archive = WalArchiveSummary();
  }

  uint64_t generation = jobs_.Generation();
  if (config_.backend.IsPgBackRest()) {
    MeasureBackend(next.backend, everything, now);
  } else {
    next.backend = BackendFacts();
  }
  if (everything || generation != generation_ || now - probed_at_ >= kRescan) {
    // A pgbackrest snapshot is a backup of the stanza, and clones are restored from it: no
    // filesystem probe decides how it is taken.
    if (config_.backend.IsPgBackRest())
      next.method = {config_.snapshot_method, "pgbackrest",
                     "backend.kind = \"pgbackrest\": the snapshot is a backup of stanza \"" +
                         config_.backend.stanza + "\"",
                     true};
    else
      next.method = ChooseSnapshotMethod(config_);
    auto needed = WalNeededFrom(config_);
    next.wal_needed_from = needed && next.archive.segment_bytes > 0
                               ? WalSegmentName(1, *needed, next.archive.segment_bytes)
                               : std::string();
    generation_ = generation;
    probed_at_ = now;
  }
  if (everything || now - libraries_at_ >= kLibraryScan) {
    next.stale_libraries_json =
        StaleLibrariesByPath(FindStaleLibraries(ServerProcesses(config_.data_directory))).dump();
    libraries_at_ = now;
  }
  next.measured_at = now;
  std::lock_guard<std::mutex> lock(mu_);
  facts_ = std::move(next);
}

void HostFactsRefresher::MeasureBackend(BackendFacts& next, bool everything,
                                        std::chrono::steady_clock::time_point now) {
  PgBackRest pgbackrest(config_);
  next.kind = config_.backend.kind;
  next.stanza = config_.backend.stanza;
  if (everything || now - info_at_ >= kRescan) {
    try {
      next.summary_json = DumpSummary(PgBackRestSummary(pgbackrest.Info()));
    } catch (const std::exception& e) {
      next.summary_json = DumpSummary(PgBackRestInfoFailure(e.what()));
    }
    info_at_ = now;
  }
  // `pgbackrest check` switches WAL on production and may take seconds: not at construction (the
  // first Ping must not wait for it), not while a job runs pgBackRest itself, and at most every
  // kCheckInterval (kRecheckAfterFailure after a failure) unless a job started or ended since the
  // last one.
  uint64_t generation = jobs_.Generation();
  std::chrono::seconds interval = next.check_ok ? kCheckInterval : kRecheckAfterFailure;
  bool due = !next.checked || now - check_at_ >= interval || generation != check_generation_;
  if (everything || !due || !jobs_.ActiveJobId().empty()) return;
  bool ok = true;
  std::string problem;
  try {
    pgbackrest.Check(kCheckTimeout);
  } catch (const std::exception& e) {
    ok = false;
    problem = ProtoSafeText(e.what());
  }
  // A job that started meanwhile may have restarted the server under the check (a rollback):
  // such a result says nothing about the archive, and the check runs again once the job ends.
  if (jobs_.Generation() != generation || !jobs_.ActiveJobId().empty()) return;
  if (!ok && (next.check_ok || next.check_problem != problem))
    spdlog::warn("{}: pgbackrest check failed: {}", pgbackrest.Describe(), problem);
  next.check_ok = ok;
  next.check_problem = problem;
  next.checked = true;
  next.checked_at = std::chrono::system_clock::now();
  // The check's own WAL switch and wait are not counted against the interval.
  check_at_ = std::chrono::steady_clock::now();
  check_generation_ = generation;
}

}  // namespace safe_upgrade
