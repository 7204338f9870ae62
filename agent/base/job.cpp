// Job manager: runs one job at a time on its own thread and keeps its events for polling.
#include "base/job.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <regex>

#include "base/fs_util.h"

namespace safe_upgrade {

std::string JobId(JobKind kind, int64_t upgrade_id) {
  return std::string(JobKindName(kind)) + "-" + std::to_string(upgrade_id);
}

bool ParseJobId(const std::string& job_id, JobKind& kind, int64_t& upgrade_id) {
  // The kind's name, then a positive id of at most 18 digits (no sign, no leading zero).
  static const std::regex re("^([a-z_]+)-([1-9][0-9]{0,17})$");
  std::smatch m;
  if (job_id.size() > 40 || !std::regex_match(job_id, m, re)) return false;
  std::optional<JobKind> parsed = ParseJobKind(m[1].str());
  if (!parsed) return false;
  kind = *parsed;
  upgrade_id = std::stoll(m[2]);
  return true;
}

void JobContext::Event(const std::string& phase, const std::string& level, const std::string& message,
                       nlohmann::json detail) {
  auto log_level = level == "error"     ? spdlog::level::err
                   : level == "warning" ? spdlog::level::warn
                                        : spdlog::level::info;
  spdlog::log(log_level, "upgrade {}: [{}] {}", upgrade_id_, phase, message);
  manager_.AddEvent(job_id_, JobEvent{0, NowIso8601(), phase, level, message, std::move(detail)});
}

void JobContext::Progress(double fraction) { manager_.SetProgress(job_id_, fraction); }

bool JobContext::Stopping() const { return manager_.stopping(); }

void JobContext::Failpoint(const std::string& name) const {
  const char* fp = getenv("SAFE_UPGRADE_FAILPOINT");
  if (fp && name == fp) {
    spdlog::warn("upgrade {}: failpoint {} reached, killing the agent", upgrade_id_, name);
    spdlog::default_logger()->flush();
    kill(getpid(), SIGKILL);
  }
}

JobManager::JobManager(const AgentConfig& config, Journal& journal) : config_(config), journal_(journal) {}

JobManager::~JobManager() { Shutdown(); }

void JobManager::Shutdown() {
  stopping_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

std::string JobManager::Start(JobKind kind, int64_t upgrade_id, JobBody body) {
  std::string id = JobId(kind, upgrade_id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!active_.empty()) {
      if (active_ == id) return id;  // the same request again: idempotent
      throw BusyError("job " + active_ + " is running; one job runs at a time");
    }
    Record rec;
    rec.state.id = id;
    rec.state.kind = kind;
    rec.state.upgrade_id = upgrade_id;
    jobs_[id] = std::move(rec);
    active_ = id;
    ++generation_;
  }
  spdlog::info("upgrade {}: job {} started", upgrade_id, id);
  threads_.emplace_back([this, id, kind, upgrade_id, body = std::move(body)] {
    JobContext ctx(*this, id, upgrade_id, config_, journal_);
    const std::string phase(JobKindName(kind));
    JobStatus status = JobStatus::kSucceeded;
    JobFailureKind failure = JobFailureKind::kNone;
    std::string error;
    nlohmann::json result = nlohmann::json::object();
    try {
      result = body(ctx);
    } catch (const JobFailure& f) {
      status = JobStatus::kFailed;
      failure = f.kind() == JobFailureKind::kNone ? JobFailureKind::kFailed : f.kind();
      error = f.what();
      // A failure's detail is also its result: the report a person reads (e.g. the failed checks).
      result = f.detail().is_object() ? f.detail() : nlohmann::json::object();
      ctx.Event(phase, "error", error, f.detail());
    } catch (const std::exception& e) {
      status = JobStatus::kFailed;
      failure = JobFailureKind::kFailed;
      error = e.what();
      ctx.Event(phase, "error", error);
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto& st = jobs_[id].state;
    st.status = status;
    st.failure = failure;
    st.error = error;
    st.result = result;
    if (status == JobStatus::kSucceeded) st.progress = 1;
    active_.clear();
    ++generation_;
    spdlog::info("upgrade {}: job {} {}", upgrade_id, id,
                 status == JobStatus::kSucceeded ? "succeeded" : "failed");
  });
  return id;
}

std::optional<JobSnapshot> JobManager::Get(const std::string& job_id, int64_t after_seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  JobSnapshot out = it->second.state;
  out.events.clear();
  for (const auto& e : it->second.state.events)
    if (e.seq > after_seq) out.events.push_back(e);
  return out;
}

std::string JobManager::ActiveJobId() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_;
}

void JobManager::AddEvent(const std::string& job_id, JobEvent event) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& st = jobs_[job_id].state;
  event.seq = ++st.next_cursor;
  st.events.push_back(std::move(event));
}

void JobManager::SetProgress(const std::string& job_id, double fraction) {
  std::lock_guard<std::mutex> lock(mu_);
  jobs_[job_id].state.progress = fraction;
}

}  // namespace safe_upgrade
