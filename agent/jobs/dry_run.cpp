// The dry-run job: the upgrade and the health checks, in each database of the upgrade, on an
// isolated clone of the upgrade's snapshot, then teardown. Production is only read (the upgrade
// row, its health checks and the dependency rows recorded before); the clone never connects to it
// and never archives.
#include <map>
#include <regex>

#include "base/elapsed.h"
#include "checks/config_tables.h"
#include "checks/health_checks.h"
#include "jobs/jobs.h"
#include "jobs/standbys.h"
#include "postgres/catalog.h"
#include "postgres/upgrade_runner.h"
#include "scratch/clone.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

// The journal may name the snapshot (the snapshot job writes it); otherwise the default name.
// Either way it must look like one of ours, since it becomes a path.
std::string SnapshotIdOf(JobContext& ctx) {
  std::string id = ctx.journal().Load(ctx.upgrade_id()).snapshot_id;
  static const std::regex valid("^snap-[0-9]{1,18}(-[0-9A-Za-z]{1,32})?$");
  if (id.empty() || !std::regex_match(id, valid)) id = SnapshotIdFor(ctx.upgrade_id());
  return id;
}

// Relations the upgrade locks in AccessExclusiveLock, for the event log: on production these
// block every reader while the upgrade runs.
std::vector<std::string> ExclusiveRelations(const json& lock_profile) {
  std::vector<std::string> out;
  for (const auto& l : lock_profile)
    if (l.value("locktype", "") == "relation" && l.value("mode", "") == "AccessExclusiveLock")
      out.push_back(l.value("object", ""));
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The extension's registered tables (config_tables.h) after the upgrade committed on the clone:
// fewer rows than before, or a table gone, blocks the upgrade.
template <typename Failure>
void RequireConfigTablesKept(JobContext& ctx, PgConn& conn, const std::string& extname, const std::string& datname,
                             const std::vector<ConfigTable>& before, json& into, Failure failure) {
  if (before.empty()) return;
  std::vector<ConfigTable> after = ReadConfigTables(conn, extname);
  ConfigTableChanges changes = CompareConfigTables(before, after);
  into = {{"before", ToJson(before)}, {"after", ToJson(after)}, {"changes", changes.ToJson()}};
  if (!changes.losses.empty())
    throw failure("database " + datname + ": the upgrade loses rows of " + extname +
                      "'s own data (tables registered with pg_extension_config_dump): " + Join(changes.losses),
                  {{"datname", datname}, {"config_tables", into}});
  ctx.Info("config_tables",
           "database " + datname + ": " + std::to_string(before.size()) + " table(s) of " + extname +
               "'s own data keep their rows" +
               (changes.changed.empty() ? "" : " (rewritten: " + Join(changes.changed) + ")"),
           into);
}

// The upgrade and its checks in one database of the clone; adds what it finds to report: flat
// lists tagged with the database, and that database's own part in report.databases. Throws
// JobFailure (via failure) when the upgrade or a check fails there.
template <typename Failure>
void DryRunInDatabase(JobContext& ctx, Clone& clone, const UpgradeRecord& upgrade, const UpgradeDatabase& db,
                      const std::vector<HealthCheckRecord>& user_checks, const json& before_recorded,
                      const std::string& snapshot_id, json& report, Failure failure) {
  json part = {{"datname", db.datname}};
  auto conn = clone.Connect("safe-upgrade-agent dryrun", db.datname);
  std::string current = InstalledVersion(*conn, upgrade.extname);
  if (current != db.from_version)
    throw failure("extension " + upgrade.extname + " is at version " +
                  (current.empty() ? "(none)" : current) + " in database " + db.datname + " of snapshot " +
                  snapshot_id + ", but the upgrade starts from " + db.from_version);
  json before = before_recorded.empty() ? DependencyRows(*conn, upgrade.extname) : before_recorded;
  // The registered tables of the extension and of each member upgraded with it.
  std::map<std::string, std::vector<ConfigTable>> config_before;
  config_before[upgrade.extname] = ReadConfigTables(*conn, upgrade.extname);
  for (const auto& member : db.FamilyNames()) config_before[member] = ReadConfigTables(*conn, member);

  // The extension, then its family (the extensions that require it), in one transaction.
  auto hops = PlanUpgrade(upgrade.extname, db, upgrade.to_version, current);
  const std::string with_family = WithFamily(db);
  UpgradeRunOptions opt;
  // Nothing else runs in the clone, so a lock wait can only be a stray autovacuum worker.
  opt.lock_timeout = "1min";
  opt.statement_timeout = std::to_string(std::max(60, ctx.config().job_timeout_s)) + "s";
  opt.on_hop = [&](const Hop& h) {
    ctx.Info("upgrade",
             "database " + db.datname + ": hop " + h.Name() +
                 (h.extname == upgrade.extname ? "" : " of " + h.extname) + " took " +
                 std::to_string(h.duration_ms) + " ms",
             {{"from", h.from}, {"to", h.to}, {"duration_ms", h.duration_ms}, {"datname", db.datname}});
  };
  ctx.Info("upgrade", "upgrading " + upgrade.extname + " in database " + db.datname + " of the clone" +
                          with_family + ": " + std::to_string(HopCount(hops)) + " hop(s) in one transaction");
  UpgradeOutcome outcome = RunUpgrade(*conn, hops, opt);
  json o = outcome.ToJson();
  part["hops"] = o["hops"];
  part["lock_profile"] = o["lock_profile"];
  AppendForDatabase(report["hops"], o["hops"], db.datname);
  AppendForDatabase(report["lock_profile"], o["lock_profile"], db.datname);
  if (!outcome.committed)
    throw failure("database " + db.datname + ": " + outcome.FailureMessage(),
                  {{"failed_hop", o.value("failed_hop", json())}, {"datname", db.datname}});
  auto exclusive = ExclusiveRelations(outcome.lock_profile);
  ctx.Info("upgrade",
           "upgrade committed in database " + db.datname + " of the clone" + with_family + "; it held " +
               std::to_string(outcome.lock_profile.size()) + " lock(s)" +
               (exclusive.empty() ? "" : ", AccessExclusiveLock on " + Join(exclusive)),
           {{"lock_profile", outcome.lock_profile}, {"datname", db.datname}});

  for (const auto& [extname, before_tables] : config_before) {
    json compared;
    RequireConfigTablesKept(ctx, *conn, extname, db.datname, before_tables, compared, failure);
    if (compared.is_null()) continue;
    if (extname == upgrade.extname)
      part["config_tables"] = compared;
    else
      part["family_config_tables"][extname] = compared;
  }
  part["dependency_after"] = DependencyRows(*conn, upgrade.extname);
  json drift = DependencyDrift(before, part["dependency_after"]);
  drift["before_source"] = before_recorded.empty() ? "clone" : "production";
  part["drift"] = drift;
  for (const char* k : {"added", "removed", "changed"})
    AppendForDatabase(report["drift"][k], drift[k], db.datname);
  if (!drift["removed"].empty() || !drift["changed"].empty())
    ctx.Event("drift", "warning",
              "database " + db.datname + ": dependencies changed: " + std::to_string(drift["added"].size()) +
                  " added, " + std::to_string(drift["removed"].size()) + " removed, " +
                  std::to_string(drift["changed"].size()) + " changed",
              drift);
  conn.reset();

  // A new backend, so that C functions run from the new library, as they will on production.
  auto check_conn = clone.Connect("safe-upgrade-agent dryrun-checks", db.datname);
  HealthCheckInput input;
  input.extname = upgrade.extname;
  input.target_version = upgrade.to_version;
  input.user_checks = user_checks;
  input.dependency_before = before;
  input.family = db.FamilyNames();
  auto results =
      RunHealthChecksInDatabase(*check_conn, input, db.datname,
                                [&](const std::string& level, const std::string& message,
                                    const json& detail) { ctx.Event("checks", level, message, detail); });
  part["checks"] = ChecksToJson(results);
  AppendForDatabase(report["checks"], part["checks"], db.datname);
  report["databases"].push_back(part);
  if (const CheckResult* bad = FirstFailure(results))
    throw failure("health check \"" + bad->name + "\" failed in database " + db.datname +
                      " of the clone: " + bad->message,
                  {{"datname", db.datname}});
}

// Before anything is copied: every standby's node has the target's files. A standby promoted
// later without the new library could not run the catalog the primary will have replicated.
template <typename Failure>
void RequireStandbysReady(JobContext& ctx, const UpgradeRecord& upgrade, json& report, Failure failure) {
  if (ctx.config().standbys.empty()) return;
  StandbyFilesVerdict verdict = CheckStandbysFiles(ctx, upgrade.id);
  report["standbys"] = verdict.standbys;
  if (!verdict.Ready())
    throw failure("the upgrade's target is not installed on every standby: " + Join(verdict.problems) +
                      "; install " + upgrade.extname + " " + upgrade.to_version +
                      " there first (production was not touched)",
                  {{"standbys", verdict.standbys}});
  ctx.Info("standbys", "every standby (" + std::to_string(verdict.standbys.size()) + ") has the files of " +
                           upgrade.extname + " " + upgrade.to_version,
           {{"standbys", verdict.standbys}});
}

}  // namespace

json RunDryRunJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t id = ctx.upgrade_id();
  auto job_started = std::chrono::steady_clock::now();
  json report = {
      {"hops", json::array()},
      {"lock_profile", json::array()},
      {"checks", json::array()},
      {"drift", {{"added", json::array()}, {"removed", json::array()}, {"changed", json::array()}}},
      {"databases", json::array()}};
  auto failure = [&](const std::string& message, const json& extra = json::object()) {
    json detail = report;
    for (auto it = extra.begin(); it != extra.end(); ++it) detail[it.key()] = it.value();
    detail["reason"] = message;
    detail["duration_ms"] = MsSince(job_started);
    return JobFailure(message, detail);
  };

  // What to do, from production's catalog (read only, and closed before the clone exists).
  UpgradeRecord upgrade;
  std::map<std::string, std::vector<HealthCheckRecord>> user_checks;
  std::map<std::string, json> before_recorded;
  {
    auto prod = ConnectProduction(config, "safe-upgrade-agent dryrun");
    upgrade = LoadUpgrade(*prod, id);
    for (const auto& db : upgrade.databases) {
      user_checks[db.datname] = LoadHealthChecks(*prod, upgrade, db);
      before_recorded[db.datname] = RecordedDependencyRows(*prod, id, "before", db.datname);
    }
  }
  report["extname"] = upgrade.extname;
  report["from_version"] = upgrade.from_version;
  report["to_version"] = upgrade.to_version;
  RequireStandbysReady(ctx, upgrade, report, failure);

  std::string snapshot_id = SnapshotIdOf(ctx);
  report["snapshot_id"] = snapshot_id;
  try {
    LoadSnapshotMeta(config, snapshot_id);
  } catch (const std::exception& e) {
    throw failure(std::string("no usable snapshot for the dry run: ") + e.what());
  }

  Clone clone(ctx, snapshot_id);
  try {
    clone.Create(0.0, 0.6);
    report["clone"] = {{"port", clone.port()}, {"data_dir", clone.data_dir()}};
    if (ctx.Stopping())
      throw failure("the agent is shutting down; the dry run stopped before starting the clone");
    clone.Start();
    ctx.Progress(0.65);
    ctx.Failpoint("dryrun:after_clone_start");
    report["isolation"] = clone.VerifyIsolation();
  } catch (const JobFailure& f) {
    json extra = f.detail().is_object() ? f.detail() : json::object();
    throw failure(f.what(), extra);
  }
  ctx.Info("clone",
           "clone is isolated: archive_mode off, no standby.signal, no primary_conninfo, "
           "safe_upgrade.enabled off, no TCP",
           report["isolation"]);

  try {
    size_t done = 0;
    for (const auto& db : upgrade.databases) {
      DryRunInDatabase(ctx, clone, upgrade, db, user_checks[db.datname], before_recorded[db.datname],
                       snapshot_id, report, failure);
      ctx.Progress(0.65 + 0.3 * static_cast<double>(++done) / static_cast<double>(upgrade.databases.size()));
    }
  } catch (const JobFailure&) {
    throw;
  } catch (const PgError& e) {
    // The clone itself broke (e.g. a new library crashed its backend): that blocks the upgrade.
    throw failure("the dry-run clone failed: " + e.Full() + "; its log ends with:\n" + clone.LogTail(1500));
  } catch (const std::exception& e) {
    // Keep what the dry run found so far in the report.
    throw failure(std::string("the dry run failed: ") + e.what());
  }

  clone.Teardown();
  report["duration_ms"] = MsSince(job_started);
  ctx.Info("dryrun", "dry run passed in " + std::to_string(upgrade.databases.size()) +
                         " database(s): " + std::to_string(report["hops"].size()) + " hop(s), " +
                         std::to_string(report["checks"].size()) + " check(s), production untouched");
  return report;
}

}  // namespace safe_upgrade
