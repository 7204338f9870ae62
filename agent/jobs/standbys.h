// The primary agent's calls to its standbys' agents ([[standby]] in its configuration): before the
// apply, each confirms that the target version's files are installed on its node; after a
// rollback, each re-syncs its standby onto the primary's new timeline. Standbys are re-synced at
// the same time; the primary stays up whatever happens to one of them.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/job.h"
#include "rpc/agent_client.h"

namespace safe_upgrade {

// A client for a standby's agent, with this agent's [tls] client certificate for TCP addresses.
std::unique_ptr<AgentClient> ConnectStandbyAgent(const AgentConfig& config, const AgentConfig::StandbyAgent& standby,
                                                 int deadline_ms);

struct StandbyFilesVerdict {
  nlohmann::json standbys = nlohmann::json::array();  // per standby: name, agent, ready, problems, error
  std::vector<std::string> problems;                  // "standby1: ..." for each one that is not ready
  bool Ready() const { return problems.empty(); }
};

// Every configured standby agent's answer for the upgrade (retried while the upgrade is not yet
// replicated there, up to a deadline). An agent that cannot answer is a problem: its node could
// not be checked.
StandbyFilesVerdict CheckStandbysFiles(JobContext& ctx, int64_t upgrade_id);

// Starts the resync job on every configured standby agent and waits for all of them. Per standby:
// name, agent, outcome ("streaming": it already did, "rewound", "recloned", "failed",
// "unreachable"), error, seconds, and the job's result.
nlohmann::json ResyncStandbys(JobContext& ctx, const std::string& phase);
// Whether every standby of a ResyncStandbys result streams again.
bool AllStandbysStream(const nlohmann::json& results);

}  // namespace safe_upgrade
