// What the agent does when it starts: clean up what a crash left behind and resume interrupted
// rollbacks from the journal.
#include <spdlog/spdlog.h>

#include "jobs/jobs.h"
#include "jobs/registry.h"
#include "postgres/catalog.h"
#include "scratch/clone.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {

void RecoverOnStartup(JobManager& jobs, Journal& journal, const AgentConfig& config) {
  // No job survives an agent restart, so every journaled dry-run clone is an orphan.
  RemoveOrphanedClones(config, journal);
  // Rollback targets survive an agent restart (they are servers of their own, or parked), but
  // those of upgrades that can no longer roll back only hold disk. Without the catalog (the
  // server may be down mid-rollback) they are kept until a later job start looks again.
  try {
    auto conn = ConnectProduction(config, "safe-upgrade-agent startup");
    DiscardRollbackTargetsExcept(config, journal, UpgradesThatMayRollBack(*conn));
  } catch (const std::exception& e) {
    spdlog::info("rollback targets not checked at start (the catalog is not reachable: {})", e.what());
  }
  for (int64_t id : journal.UpgradeIds()) {
    JournalDoc doc;
    try {
      doc = journal.Load(id);
    } catch (const std::exception& e) {
      spdlog::error("upgrade {}: unreadable journal entry: {}", id, e.what());
      continue;
    }
    if (doc.rollback == RollbackState::kInProgress) {
      spdlog::warn("upgrade {}: a rollback was interrupted at step \"{}\"; resuming it", id,
                   doc.rollback_step);
      try {
        jobs.Start(JobKind::kRollback, id, SpecOf(JobKind::kRollback).body);
      } catch (const std::exception& e) {
        spdlog::error("upgrade {}: could not resume the rollback: {}", id, e.what());
      }
    }
  }
}

}  // namespace safe_upgrade
