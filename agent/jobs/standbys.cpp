// The primary agent's calls to its standby agents (standbys.h).
#include "jobs/standbys.h"

#include <chrono>
#include <optional>
#include <thread>

#include "base/elapsed.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kFilesDeadline{30};
constexpr std::chrono::seconds kStartDeadline{30};
constexpr int kCallDeadlineMs = 5000;

// The call may be repeated: the agent is up but cannot answer yet, or the upgrade has not been
// replicated to the standby's catalog yet.
bool Retryable(const AgentCallError& e) { return e.unavailable || e.unreachable || e.not_found || e.busy; }

std::string Describe(const AgentCallError& e) {
  if (e.unreachable) return "its agent cannot be reached (" + e.message + ")";
  return e.message;
}

// Repeats call while it fails in a way retryable forgives, for up to patience; an exception (a
// client that cannot be made) is a failed call.
template <typename Call>
AgentCallError CallPatiently(std::chrono::seconds patience, bool (*retryable)(const AgentCallError&), Call call) {
  AgentCallError err;
  auto deadline = Clock::now() + patience;
  try {
    for (;;) {
      err = call();
      if (err.ok || !retryable(err) || Clock::now() >= deadline) return err;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  } catch (const std::exception& e) {
    err.ok = false;
    err.message = e.what();
  }
  return err;
}

// The agent is up (or coming up) but cannot start the job yet.
bool StartRetryable(const AgentCallError& e) { return e.unavailable || e.unreachable || e.busy; }

// A standby whose resync job is followed.
struct Following {
  const AgentConfig::StandbyAgent* standby;
  std::unique_ptr<AgentClient> client;
  std::string job_id;
  int64_t cursor = 0;
  json result;
  bool done = false;
  // Since when its agent has not answered (a crash, a restart): it is given kStartDeadline.
  std::optional<Clock::time_point> silent_since;
};

}  // namespace

std::unique_ptr<AgentClient> ConnectStandbyAgent(const AgentConfig& config, const AgentConfig::StandbyAgent& standby,
                                                 int deadline_ms) {
  AgentTls tls;
  if (standby.agent.rfind("unix:", 0) != 0 && !config.tls_ca_file.empty())
    tls = {config.tls_ca_file, config.tls_cert_file, config.tls_key_file};
  return AgentClient::Create(standby.agent, deadline_ms, tls);
}

StandbyFilesVerdict CheckStandbysFiles(JobContext& ctx, int64_t upgrade_id) {
  StandbyFilesVerdict verdict;
  for (const auto& standby : ctx.config().standbys) {
    json entry = {{"name", standby.name}, {"agent", standby.agent}, {"ready", false}};
    AgentStandbyFiles files;
    std::unique_ptr<AgentClient> client;
    AgentCallError err = CallPatiently(kFilesDeadline, Retryable, [&] {
      if (!client) client = ConnectStandbyAgent(ctx.config(), standby, kCallDeadlineMs);
      return client->CheckStandbyFiles(upgrade_id, files);
    });
    if (!err.ok) {
      entry["error"] = Describe(err);
      verdict.problems.push_back(standby.name + ": the target's files could not be checked: " + Describe(err));
    } else {
      entry["ready"] = files.ready;
      entry["problems"] = files.problems;
      entry["share_dir"] = files.share_dir;
      entry["lib_dir"] = files.lib_dir;
      for (const auto& problem : files.problems) verdict.problems.push_back(standby.name + ": " + problem);
    }
    verdict.standbys.push_back(entry);
  }
  return verdict;
}

json ResyncStandbys(JobContext& ctx, const std::string& phase) {
  const AgentConfig& config = ctx.config();
  const int64_t id = ctx.upgrade_id();
  auto started = Clock::now();
  std::vector<Following> following;
  for (const auto& standby : config.standbys) {
    Following f{&standby, nullptr, "", 0, {{"name", standby.name}, {"agent", standby.agent}}, false, std::nullopt};
    AgentCallError err = CallPatiently(kStartDeadline, StartRetryable, [&] {
      if (!f.client) f.client = ConnectStandbyAgent(config, standby, kCallDeadlineMs);
      return f.client->StartJob(JobKind::kResyncStandby, id, f.job_id);
    });
    if (!err.ok) {
      f.result["outcome"] = err.unreachable || err.unavailable ? "unreachable" : "failed";
      f.result["error"] = Describe(err);
      f.done = true;
      ctx.Event(phase, "error", "standby " + standby.name + " cannot be re-synced: " + Describe(err),
                f.result);
    } else {
      ctx.Info(phase, "standby " + standby.name + ": re-syncing onto the restored primary (" + f.job_id + ")");
    }
    following.push_back(std::move(f));
  }

  auto deadline = Clock::now() + std::chrono::seconds(std::max(60, config.job_timeout_s));
  for (bool pending = true; pending;) {
    pending = false;
    for (auto& f : following) {
      if (f.done) continue;
      AgentJob job;
      AgentCallError err = f.client->GetJob(f.job_id, f.cursor, job);
      if (err.ok) {
        f.cursor = job.next_cursor;
        for (const auto& e : job.events)
          ctx.Event(phase, e.level, "standby " + f.standby->name + ": " + e.message);
        if (job.state == "succeeded") {
          json result = json::parse(job.result_json.empty() ? "{}" : job.result_json);
          std::string method = result.value("method", "");
          f.result["outcome"] = method == "rewind" ? "rewound" : method == "reclone" ? "recloned" : "streaming";
          f.result["result"] = result;
          f.done = true;
        } else if (job.state == "failed") {
          f.result["outcome"] = "failed";
          f.result["error"] = job.error;
          f.done = true;
        }
      } else if (err.not_found) {
        // The agent restarted and forgot the job: what it did to the standby is unknown here.
        f.result["outcome"] = "failed";
        f.result["error"] = "its agent restarted during the resync (the job is gone); check the standby";
        f.done = true;
      } else if (!Retryable(err)) {
        f.result["outcome"] = "failed";
        f.result["error"] = "lost track of its resync job: " + Describe(err);
        f.done = true;
      } else if (!f.silent_since) {
        f.silent_since = Clock::now();
      } else if (Clock::now() - *f.silent_since > kStartDeadline) {
        f.result["outcome"] = "unreachable";
        f.result["error"] = "its agent stopped answering during the resync: " + Describe(err);
        f.done = true;
      }
      if (err.ok) f.silent_since.reset();
      if (!f.done && Clock::now() > deadline) {
        f.result["outcome"] = "failed";
        f.result["error"] = "its resync job did not end within " + std::to_string(config.job_timeout_s) + " s";
        f.done = true;
      }
      if (f.done) {
        f.result["seconds"] = MsSince(started) / 1000.0;
        if (f.result["outcome"] == "failed" || f.result["outcome"] == "unreachable")
          ctx.Event(phase, "error",
                    "standby " + f.standby->name + " was not re-synced: " + f.result.value("error", ""), f.result);
        else
          ctx.Info(phase, "standby " + f.standby->name + " streams again (" + f.result["outcome"].get<std::string>() +
                              ")", f.result);
      }
      pending = pending || !f.done;
    }
    if (pending) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  json results = json::array();
  for (const auto& f : following) results.push_back(f.result);
  return results;
}

bool AllStandbysStream(const json& results) {
  for (const auto& r : results) {
    std::string outcome = r.value("outcome", "");
    if (outcome != "streaming" && outcome != "rewound" && outcome != "recloned") return false;
  }
  return true;
}

}  // namespace safe_upgrade
