// The agent's job registry: what each kind of job runs and when it may start.
#include "jobs/registry.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "core/state_table.h"
#include "jobs/jobs.h"
#include "jobs/patroni_maintenance.h"
#include "postgres/catalog.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

const JobSpec kJobs[] = {
    {JobKind::kSnapshot, RunSnapshotJob,
     "a snapshot is taken only when safe_upgrade.begin() starts an upgrade"},
    {JobKind::kDryRun, RunDryRunJob, "a dry run runs only right after the upgrade's snapshot"},
    {JobKind::kRollbackTarget, RunScheduledJob,
     "a rollback target is prepared only while the upgrade is scheduled, before its restore point"},
    {JobKind::kApply, RunApplyJob,
     "production is upgraded only once the restore point of a validated, scheduled upgrade is archived"},
    {JobKind::kVerify, RunVerifyJob, "production is verified only right after the upgrade's apply"},
    {JobKind::kRollback, RunRollbackJob,
     "a rollback starts only through safe_upgrade.rollback({id}) or a failed verification"},
};

std::string WithId(std::string text, const std::string& id) {
  for (auto pos = text.find("{id}"); pos != std::string::npos; pos = text.find("{id}", pos))
    text.replace(pos, 4, id);
  return text;
}

}  // namespace

const JobSpec& SpecOf(JobKind kind) {
  for (const auto& spec : kJobs)
    if (spec.kind == kind) return spec;
  throw std::logic_error("no job registered for kind " + std::string(JobKindName(kind)));
}

std::string RefusalOf(const JobSpec& spec, int64_t upgrade_id, const std::string& state) {
  const std::string due(StateName(StateForJob(spec.kind)));
  if (state == due) return "";
  std::string id = std::to_string(upgrade_id);
  return "upgrade " + id + " is " + state + ", not " + due + "; " + WithId(spec.how, id);
}

JobBody RequestedJobBody(const JobSpec& spec) {
  return [body = spec.body](JobContext& ctx) {
    // Without the catalog the targets are kept: a later job start looks again.
    try {
      auto conn = ConnectProduction(ctx.config(), "safe-upgrade-agent");
      DiscardRollbackTargetsExcept(ctx.config(), ctx.journal(), UpgradesThatMayRollBack(*conn));
    } catch (const std::exception& e) {
      spdlog::info("upgrade {}: rollback targets not checked (the catalog is not reachable: {})",
                   ctx.upgrade_id(), e.what());
    }
    return body(ctx);
  };
}

}  // namespace safe_upgrade
