// Following and starting the agent job of an upgrade's state, and deciding an apply the agent lost
// or failed from the installed versions.
#pragma once

#include <string>

#include "rpc/agent_client.h"
#include "upgrade_row.h"

namespace safe_upgrade::pg {

// Copies the job's new events into the catalog and acts on its end.
void FollowJob(Upgrade& u, AgentClient& agent, const AgentJournal& journal);
// Starts the job the state table gives the upgrade's state.
void StartJob(Upgrade& u, AgentClient& agent, const AgentJournal& journal);
// Production may have been touched, but the apply's outcome is unknown: the extension's version in
// every database decides (core ResolveApply), never running the upgrade again.
void ResolveApplyFromVersions(Upgrade& u, AgentClient& agent, const AgentJournal& journal,
                              const std::string& why);

}  // namespace safe_upgrade::pg
