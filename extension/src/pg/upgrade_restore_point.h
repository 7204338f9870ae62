// The scheduled state's steps: the rollback target, then the restore point, then its WAL in the
// archive, after which the upgrade applies.
#pragma once

#include "rpc/agent_client.h"
#include "upgrade_row.h"

namespace safe_upgrade::pg {

void StepScheduled(Upgrade& u, AgentClient& agent, const AgentJournal& journal);

}  // namespace safe_upgrade::pg
