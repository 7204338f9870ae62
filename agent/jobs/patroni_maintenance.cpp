// Patroni's maintenance mode around an upgrade (patroni_maintenance.h).
#include "jobs/patroni_maintenance.h"

#include <spdlog/spdlog.h>

#include "core/state_table.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/patroni.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

PatroniClient ClientFor(const AgentConfig& config) {
  return PatroniClient(config.patroni.rest_api, std::chrono::seconds(15), config.patroni.ca_file);
}

void PausePatroni(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  if (config.patroni.rest_api.empty() || ctx.journal().Load(ctx.upgrade_id()).patroni_paused) return;
  try {
    PatroniClient patroni = ClientFor(config);
    PatroniMember member = patroni.Member();
    if (member.role != "primary")
      throw JobFailure("Patroni at " + config.patroni.rest_api + " says this member is " + member.role +
                           ", not the leader; the upgrade runs on the leader's agent only",
                       {}, JobFailureKind::kFailed);
    if (member.pause) {
      ctx.Event("patroni", "warning",
                "Patroni is paused already (maintenance mode set by someone else); the agent leaves it paused "
                "and will not resume it");
      return;
    }
    // Journaled first: an agent that dies right after the request still resumes it later.
    ctx.journal().Update(ctx.upgrade_id(), [](JournalDoc& doc) { doc.patroni_paused = true; });
    patroni.Pause();
    ctx.Info("patroni", "Patroni paused (maintenance mode) until the upgrade ends: no failover or restart "
                        "will fight the apply or a rollback");
  } catch (const PatroniError& e) {
    throw JobFailure(std::string("cannot pause Patroni before the restore point: ") + e.what() +
                         "; production was not touched",
                     {}, JobFailureKind::kFailed);
  }
}

}  // namespace

nlohmann::json RunScheduledJob(JobContext& ctx) {
  PausePatroni(ctx);
  return RunPrepareRollbackJob(ctx);
}

void ResumePatroniForEndedUpgrades(const AgentConfig& config, Journal& journal, const JobManager& jobs) {
  if (config.patroni.rest_api.empty()) return;
  try {
    std::vector<int64_t> paused;
    for (int64_t id : journal.UpgradeIds())
      if (journal.Load(id).patroni_paused) paused.push_back(id);
    if (paused.empty() || !jobs.ActiveJobId().empty()) return;
    auto conn = ConnectProduction(config, "safe-upgrade-agent patroni");
    for (int64_t id : paused) {
      auto r = conn->Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
      if (!r.Empty() && IsInFlightState(r.Scalar())) continue;
      ClientFor(config).Resume();
      journal.Update(id, [](JournalDoc& doc) { doc.patroni_paused = false; });
      spdlog::info("upgrade {}: Patroni resumed (the upgrade is {})", id, r.Empty() ? "gone" : r.Scalar());
    }
  } catch (const std::exception& e) {
    spdlog::warn("Patroni not resumed yet: {}", e.what());
  }
}

}  // namespace safe_upgrade
