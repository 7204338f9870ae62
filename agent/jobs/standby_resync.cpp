// The standby agent's resync job: after the primary's rollback, the standby has replayed past the
// restore point on the old timeline and cannot follow the primary's new one. It is stopped,
// rewound with pg_rewind against the primary (or, when rewinding fails, re-cloned with
// pg_basebackup, the original kept beside it), given its own standby settings back and started;
// the job ends once it streams on the primary's timeline. A standby that already streams there is
// left alone.
#include <chrono>

#include "base/elapsed.h"
#include "base/fs_util.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/standby_node.h"

namespace safe_upgrade {

using nlohmann::json;

json RunResyncStandbyJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const std::string id = std::to_string(ctx.upgrade_id());
  auto started = std::chrono::steady_clock::now();
  StandbyState before;
  {
    auto conn = ConnectProduction(config, "safe-upgrade-agent resync");
    before = ReadStandbyState(*conn);
  }
  if (!before.in_recovery)
    throw JobFailure("the server at " + config.data_directory + " is not a standby (pg_is_in_recovery() is false)",
                     {}, JobFailureKind::kRefused);
  if (before.primary_conninfo.empty())
    throw JobFailure("the standby has no primary_conninfo: it does not say which primary to follow", {},
                     JobFailureKind::kRefused);
  // As the agent's own role, which may read what pg_rewind reads; primary_conninfo's is often a
  // replication role that may not (Patroni's "replicator").
  std::string source;
  try {
    source = PrimaryQueryConnInfo(before.primary_conninfo, config.db_user, config.database);
  } catch (const std::exception& e) {
    throw JobFailure(e.what(), {}, JobFailureKind::kRefused);
  }
  int timeline = 0;
  try {
    timeline = PrimaryTimeline(source);
  } catch (const std::exception& e) {
    throw JobFailure(std::string("cannot reach the primary through the standby's primary_conninfo: ") + e.what(),
                     {}, JobFailureKind::kRefused);
  }
  json result = {{"timeline", timeline}, {"standby_timeline_before", before.checkpoint_tli}};
  if (before.Streaming(timeline)) {
    ctx.Info("resync", "the standby already streams on the primary's timeline " + std::to_string(timeline));
    result["method"] = "none";
    result["seconds"] = MsSince(started) / 1000.0;
    return result;
  }

  ServerControl server(config.bin_dir, config.data_directory, config.control, "", config.server_log);
  const std::string saved = JoinPath(config.work_dir, "resync-" + id + "-settings");
  SaveStandbySettings(config.data_directory, saved);
  ctx.Info("resync", "stopping the standby to rewind it onto the primary's timeline " + std::to_string(timeline));
  server.Stop("fast");
  ctx.Progress(0.2);
  ctx.Failpoint("resync:after_stop");
  std::string method = "rewind";
  try {
    RewindStandby(config, source);
    ctx.Info("resync", "pg_rewind brought the standby to the primary's timeline");
  } catch (const std::exception& rewind_error) {
    method = "reclone";
    result["rewind_error"] = rewind_error.what();
    std::string aside = config.data_directory + ".resync-" + id + "-" + CompactUtcStamp();
    ctx.Event("resync", "warning",
              std::string("pg_rewind failed (") + rewind_error.what() +
                  "); re-cloning the standby with pg_basebackup, the old data directory kept in " + aside);
    try {
      RecloneStandby(config, before.primary_conninfo, aside);
    } catch (const std::exception& e) {
      throw JobFailure(std::string("the standby could be neither rewound nor re-cloned: ") + e.what() +
                           "; it is stopped, its old data directory is in " + aside + " and its settings in " +
                           saved,
                       {{"rewind_error", rewind_error.what()}, {"aside", aside}});
    }
    result["aside"] = aside;
  }
  RestoreStandbySettings(saved, config.data_directory);
  ctx.Progress(0.7);
  try {
    server.Start();
  } catch (const std::exception& e) {
    // A manager such as Patroni may have started it meanwhile (its settings are back): then it is
    // judged by whether it streams, like one started here.
    if (!server.Running()) throw;
    ctx.Event("resync", "warning",
              std::string("the standby was started by someone else meanwhile (") + e.what() + "); waiting for it to stream");
  }
  ctx.Info("resync", "standby started; waiting until it streams on timeline " + std::to_string(timeline));
  if (!WaitUntilStreaming(config, timeline, std::chrono::seconds(120)))
    throw JobFailure("the standby was " + std::string(method == "rewind" ? "rewound" : "re-cloned") +
                         " and started, but does not stream on the primary's timeline " + std::to_string(timeline) +
                         " after 120 s; see its server log",
                     {{"method", method}});
  result["method"] = method;
  result["seconds"] = MsSince(started) / 1000.0;
  ctx.Info("resync", "the standby streams on timeline " + std::to_string(timeline) + " (" + method + ", " +
                         std::to_string(result["seconds"].get<double>()) + " s)",
           result);
  return result;
}

}  // namespace safe_upgrade
