// Patroni's maintenance mode around an upgrade ([patroni] in the agent's configuration): the
// agent pauses Patroni at the upgrade's scheduled step, before the restore point, and resumes it
// once the upgrade has ended, whichever way it ended. While paused, Patroni neither fails over
// nor restarts nor demotes: the apply and a rollback (which stops and starts the primary itself,
// and re-syncs the standbys) run undisturbed. A pause someone else set is left for them to lift.
#pragma once

#include <nlohmann/json.hpp>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"

namespace safe_upgrade {

// The scheduled step's job: pause Patroni (when configured), then prepare the rollback target.
nlohmann::json RunScheduledJob(JobContext& ctx);

// Resumes Patroni for every journaled upgrade it was paused for that has ended (the catalog says
// terminal, or no longer knows it) and whose job no longer runs. Never throws: what it could not
// do is logged and tried again on the next call.
void ResumePatroniForEndedUpgrades(const AgentConfig& config, Journal& journal, const JobManager& jobs);

}  // namespace safe_upgrade
