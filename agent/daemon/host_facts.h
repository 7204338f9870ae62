// The host facts Ping reports (free space, the WAL archive, the snapshot method), measured on a
// thread of their own so that no RPC handler ever scans a disk or probes a filesystem.
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

struct HostFacts {
  uint64_t snapshot_free_bytes = 0, data_free_bytes = 0;
  bool wal_archive_writable = false;
  WalArchiveSummary archive;
  std::string wal_needed_from;  // "" when no snapshot is kept
  SnapshotMethodChoice method;
  // When free space, writability and the archive were last measured.
  std::chrono::steady_clock::time_point measured_at;
};

// Freshness: free space and writability are measured every kTick; the archive is scanned again
// within a kTick of a change to its directory (and every kRescan regardless); the snapshot method
// probe and the WAL the snapshots need, every kRescan and whenever a job starts or ends. plan()
// trusts the archive's newest file for files the server archived a second before the worker's
// ping, so kTick stays well under a second.
class HostFactsRefresher {
 public:
  static constexpr std::chrono::milliseconds kTick{250};
  static constexpr std::chrono::milliseconds kRescan{5000};

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

  const AgentConfig& config_;
  const JobManager& jobs_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  HostFacts facts_;
  // What the refresher saw last, to tell when to look again (its own thread only).
  struct timespec archive_mtime_ {};
  std::chrono::steady_clock::time_point scanned_at_, probed_at_;
  uint64_t generation_ = 0;
  std::string problem_;
  std::thread thread_;
};

}  // namespace safe_upgrade
