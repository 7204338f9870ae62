// Jobs: the agent's long operations (snapshot, dry run, apply, verify, rollback). One mutating
// job runs at a time per cluster; callers poll for state and events.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "base/config.h"
#include "base/journal.h"
#include "core/job_kinds.h"

namespace safe_upgrade {

// A job failure that is the user's problem (bad upgrade, failed check), not the agent's. Its kind
// travels to the worker with the job (GetJob), and decides the upgrade's next state; its detail
// becomes the job's result. Any other exception out of a job is a failure of kind kFailed.
class JobFailure : public std::runtime_error {
 public:
  explicit JobFailure(const std::string& message, nlohmann::json detail = nlohmann::json::object(),
                      JobFailureKind kind = JobFailureKind::kFailed)
      : std::runtime_error(message), detail_(std::move(detail)), kind_(kind) {}
  const nlohmann::json& detail() const { return detail_; }
  JobFailureKind kind() const { return kind_; }

 private:
  nlohmann::json detail_;
  JobFailureKind kind_;
};

struct JobEvent {
  int64_t seq;
  std::string at, phase, level, message;
  nlohmann::json detail;
};

enum class JobStatus { kRunning, kSucceeded, kFailed };

struct JobSnapshot {
  std::string id;
  JobKind kind = JobKind::kSnapshot;
  int64_t upgrade_id = 0;
  JobStatus status = JobStatus::kRunning;
  std::vector<JobEvent> events;
  int64_t next_cursor = 0;
  std::string error;
  JobFailureKind failure = JobFailureKind::kNone;  // for kFailed: how
  nlohmann::json result;
  double progress = -1;
};

class JobContext;
using JobBody = std::function<nlohmann::json(JobContext&)>;

class JobManager;

class JobContext {
 public:
  JobContext(JobManager& manager, std::string job_id, int64_t upgrade_id, const AgentConfig& config,
             Journal& journal)
      : manager_(manager),
        job_id_(std::move(job_id)),
        upgrade_id_(upgrade_id),
        config_(config),
        journal_(journal) {}
  int64_t upgrade_id() const { return upgrade_id_; }
  const std::string& job_id() const { return job_id_; }
  const AgentConfig& config() const { return config_; }
  Journal& journal() { return journal_; }
  void Event(const std::string& phase, const std::string& level, const std::string& message,
             nlohmann::json detail = nlohmann::json::object());
  void Info(const std::string& phase, const std::string& message,
            nlohmann::json detail = nlohmann::json::object()) {
    Event(phase, "info", message, std::move(detail));
  }
  void Progress(double fraction);
  // True once the agent is shutting down; long loops should stop early.
  bool Stopping() const;
  // Test-only fault injection: when SAFE_UPGRADE_FAILPOINT equals name, the agent dies (SIGKILL)
  // right here, as a crash would.
  void Failpoint(const std::string& name) const;

 private:
  JobManager& manager_;
  std::string job_id_;
  int64_t upgrade_id_;
  const AgentConfig& config_;
  Journal& journal_;
};

class JobManager {
 public:
  JobManager(const AgentConfig& config, Journal& journal);
  ~JobManager();
  // Starts a job unless one is running. Returns the job id, or throws BusyError.
  std::string Start(JobKind kind, int64_t upgrade_id, JobBody body);
  std::optional<JobSnapshot> Get(const std::string& job_id, int64_t after_seq) const;
  std::string ActiveJobId() const;
  // Counts job starts and ends: what a job may have changed on disk (snapshots, the archive's
  // retention) is worth measuring again when it moves.
  uint64_t Generation() const { return generation_.load(); }
  void Shutdown();
  bool stopping() const { return stopping_.load(); }

  // Called by JobContext.
  void AddEvent(const std::string& job_id, JobEvent event);
  void SetProgress(const std::string& job_id, double fraction);

 private:
  struct Record {
    JobSnapshot state;
  };
  const AgentConfig& config_;
  Journal& journal_;
  mutable std::mutex mu_;
  std::map<std::string, Record> jobs_;
  std::string active_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> generation_{0};
};

class BusyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "<kind name>-<upgrade id>", e.g. "snapshot-42" (JobKindName).
std::string JobId(JobKind kind, int64_t upgrade_id);
// Parses and validates "<kind name>-<id>"; false when malformed or of no known kind.
bool ParseJobId(const std::string& job_id, JobKind& kind, int64_t& upgrade_id);

}  // namespace safe_upgrade
