// The host facts Ping reports (free space, the WAL archive, the snapshot method, the backend's
// state), measured on a thread of their own so that no RPC handler ever scans a disk, probes a
// filesystem or runs pgBackRest.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "base/config.h"
#include "base/job.h"
#include "postgres/wal_archive.h"
#include "storage/reflink.h"

namespace safe_upgrade {

// What the backend (config.backend) looks like. With kind "local" only the kind is set.
struct BackendFacts {
  std::string kind = "local", stanza;
  // The last `pgbackrest check`: whether one ran yet, its outcome and pgBackRest's message.
  bool checked = false, check_ok = false;
  std::string check_problem;
  std::chrono::system_clock::time_point checked_at;
  // The stanza as `pgbackrest info` last described it (PgBackRestSummary), JSON text; "" for local.
  std::string summary_json;
};

struct HostFacts {
  uint64_t snapshot_free_bytes = 0, data_free_bytes = 0;
  bool wal_archive_writable = false;
  WalArchiveSummary archive;
  std::string wal_needed_from;  // "" when no snapshot is kept
  SnapshotMethodChoice method;
  BackendFacts backend;
  // The replaced libraries the server's processes still map (StaleLibrariesByPath), JSON text.
  std::string stale_libraries_json = "[]";
  // When free space, writability and the archive were last measured.
  std::chrono::steady_clock::time_point measured_at;
};

// Freshness: free space and writability are measured every kTick; the archive is scanned again
// within a kTick of a change to its directory (and every kRescan regardless); the snapshot method
// probe and the WAL the snapshots need, every kRescan and whenever a job starts or ends. plan()
// trusts the archive's newest file for files the server archived a second before the worker's
// ping, so kTick stays well under a second. With the pgbackrest backend the agent's own archive is
// unused: `pgbackrest info` runs every kRescan, and `pgbackrest check` (which forces a WAL switch
// on production) on the thread's first pass, then every kCheckInterval (kRecheckAfterFailure while
// it fails), and after each job (when
// the job generation changes), never while a job runs.
class HostFactsRefresher {
 public:
  static constexpr std::chrono::milliseconds kTick{250};
  static constexpr std::chrono::milliseconds kRescan{5000};
  // How often the server's processes' maps are read for replaced libraries (stale_libraries.h).
  static constexpr std::chrono::milliseconds kLibraryScan{2000};
  static constexpr std::chrono::seconds kCheckInterval{60};
  // A check that failed (the stanza not created yet, an archive_command being fixed) runs again
  // sooner, so that plan() sees the fix within seconds.
  static constexpr std::chrono::seconds kRecheckAfterFailure{10};
  static constexpr std::chrono::seconds kCheckTimeout{30};

  // Measures everything once before it returns, so the first Ping already has facts.
  HostFactsRefresher(const AgentConfig& config, const JobManager& jobs);
  ~HostFactsRefresher();
  HostFactsRefresher(const HostFactsRefresher&) = delete;
  HostFactsRefresher& operator=(const HostFactsRefresher&) = delete;

  // The facts as last measured; never touches a disk.
  HostFacts Current() const;

 private:
  void Run();
  void Measure(bool everything);
  // The pgbackrest backend's facts into next; never throws (a failure is a fact).
  void MeasureBackend(BackendFacts& next, bool everything, std::chrono::steady_clock::time_point now);

  const AgentConfig& config_;
  const JobManager& jobs_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  HostFacts facts_;
  // What the refresher saw last, to tell when to look again (its own thread only).
  struct timespec archive_mtime_ {};
  std::chrono::steady_clock::time_point scanned_at_, probed_at_, libraries_at_;
  uint64_t generation_ = 0;
  std::chrono::steady_clock::time_point info_at_, check_at_;
  uint64_t check_generation_ = 0;
  std::string problem_;
  std::thread thread_;
};

}  // namespace safe_upgrade
