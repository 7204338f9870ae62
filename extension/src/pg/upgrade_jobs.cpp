// The agent's side of a step: a job's events and end, a job that would not start, the installed
// versions after a lost apply. What follows is the core's decision; this file only talks to the
// agent and executes it.
#include "upgrade_jobs.h"

#include <map>

#include "gucs.h"
#include "spi.h"

namespace safe_upgrade::pg {

using nlohmann::json;

void FollowJob(Upgrade& u, AgentClient& agent, const AgentJournal& journal) {
  AgentJob job;
  AgentCallError err = agent.GetJob(*u.agent_job, u.cursor, job);
  if (err.not_found) return Execute(u, OnJobLost(u), json::object(), agent, journal);
  if (!err.ok)
    return Execute(u, OnAgentSilent(u, err.message, guc_agent_unreachable_timeout_s), json::object(), agent,
                   journal);
  for (const auto& e : job.events)
    AddEvent(u.id, {e.phase, e.level, e.message, ParseJson(e.detail_json)},
             e.at.empty() ? std::nullopt : std::optional<std::string>(e.at));
  SpiExec(
      "UPDATE safe_upgrade.upgrades SET agent_job_cursor = $2::bigint, progress = nullif($3::float8, -1), "
      "updated_at = CASE WHEN $4::boolean THEN now() ELSE updated_at END WHERE id = $1::bigint",
      {std::to_string(u.id), std::to_string(job.next_cursor), std::to_string(job.progress),
       job.events.empty() ? "false" : "true"});
  if (job.state != "succeeded" && job.state != "failed") return;
  json result = ParseJson(job.result_json);
  RecordDatabaseResults(u, result);
  Decision d =
      job.state == "succeeded" ? OnJobSucceeded(u, result) : OnJobFailed(u, job.failure, job.error, result);
  Execute(u, d, result, agent, journal);
}

void StartJob(Upgrade& u, AgentClient& agent, const AgentJournal& journal) {
  const JobKind kind = *TableRow(u.state).job;
  std::string job_id;
  AgentCallError err = agent.StartJob(kind, u.id, job_id);
  if (err.ok) {
    SpiExec(
        "UPDATE safe_upgrade.upgrades SET agent_job = $2, agent_job_cursor = 0, updated_at = now() "
        "WHERE id = $1::bigint",
        {std::to_string(u.id), job_id});
    return;
  }
  Decision d = OnJobNotStarted(u, kind, {err.busy, err.refused, err.message}, agent.address(),
                               guc_agent_unreachable_timeout_s);
  Execute(u, d, json::object(), agent, journal);
}

void ResolveApplyFromVersions(Upgrade& u, AgentClient& agent, const AgentJournal& journal,
                              const std::string& why) {
  std::map<std::string, std::string> versions;
  AgentCallError err = agent.GetInstalledVersions(u.id, versions);
  std::optional<std::string> unreadable;
  if (!err.ok || versions.empty())
    unreadable = err.ok ? std::string("the agent reported no database") : err.message;
  Execute(u, ResolveApply(u, journal.apply, versions, unreadable, why), json::object(), agent, journal);
}

}  // namespace safe_upgrade::pg
