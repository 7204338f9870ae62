// One scheduler pass: advance every in-flight upgrade by at most one step, each in its own
// transaction, following the agent's jobs and journal.
#pragma once

#include "rpc/agent_client.h"

namespace safe_upgrade::pg {

// Returns true when upgrades are in flight (the worker then polls faster).
bool RunSchedulerPass(AgentClient& agent);

}  // namespace safe_upgrade::pg
