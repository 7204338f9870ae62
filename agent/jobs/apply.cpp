// The apply job: ALTER EXTENSION ... UPDATE on production in each database of the upgrade, one
// after the other, each hop by hop in its own transaction under lock_timeout with bounded retries,
// recording who blocks it. It stops at the first database that does not commit. The journal makes
// it happen at most once per upgrade: "started" (durable) before the first BEGIN, each database's
// own state, then "committed", "partially_committed" or "not_committed". A job that finds anything
// but "none" refuses, and an agent that crashed in between never re-runs it: the worker resolves it
// from the journal and the installed versions.
#include <spdlog/spdlog.h>

#include <map>
#include <random>
#include <set>
#include <thread>

#include "base/elapsed.h"
#include "base/fs_util.h"
#include "checks/archive_proof.h"
#include "checks/health_checks.h"
#include "jobs/jobs.h"
#include "jobs/stale_sessions.h"
#include "postgres/catalog.h"
#include "postgres/upgrade_runner.h"
#include "scratch/rollback_target.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string DescribeBlocker(const json& b) {
  auto or_none = [&](const char* key) {
    std::string v = b.value(key, "");
    return v.empty() ? std::string("none") : v;
  };
  std::string out = "pid " + std::to_string(b.value("pid", 0)) + " (user " + b.value("usename", "") +
                    ", application " + or_none("application_name") + ", state " + b.value("state", "") +
                    ", wait event " + or_none("wait_event") + ")";
  if (!b.value("lock_mode", "").empty()) out += ": holds " + b.value("lock_mode", "");
  if (!b.value("relation", "").empty()) out += " on " + b.value("relation", "");
  return out;
}

// The sessions blocking the apply backend ($1): who they are and which lock they hold on which
// relation, never their query text. events is readable by PUBLIC, and pg_stat_activity shows a
// session's query only to its own role and to privileged roles; the pid is enough to look it up.
// The waited-for relation is named only when it lives in the monitor's database (an oid elsewhere).
constexpr const char* kBlockersQuery = R"SQL(
WITH waiting AS (
  SELECT w.* FROM pg_catalog.pg_locks w WHERE w.pid = $1::int AND NOT w.granted
)
SELECT a.pid::text, coalesce(a.usename::text, ''), coalesce(a.application_name, ''), coalesce(a.state, ''),
       coalesce(a.wait_event_type || ': ' || a.wait_event, ''),
       coalesce((SELECT pg_catalog.string_agg(DISTINCT h.mode || CASE WHEN h.granted THEN '' ELSE ' (waiting)' END,
                                              ', ')
                 FROM pg_catalog.pg_locks h JOIN waiting w
                   ON h.locktype = w.locktype AND h.database IS NOT DISTINCT FROM w.database
                  AND h.relation IS NOT DISTINCT FROM w.relation AND h.page IS NOT DISTINCT FROM w.page
                  AND h.tuple IS NOT DISTINCT FROM w.tuple AND h.transactionid IS NOT DISTINCT FROM w.transactionid
                  AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid AND h.classid IS NOT DISTINCT FROM w.classid
                  AND h.objid IS NOT DISTINCT FROM w.objid AND h.objsubid IS NOT DISTINCT FROM w.objsubid
                 WHERE h.pid = a.pid), ''),
       coalesce((SELECT pg_catalog.string_agg(DISTINCT CASE WHEN d.datname = pg_catalog.current_database()
                                                            THEN w.relation::regclass::text
                                                            ELSE 'oid ' || w.relation || ' in database ' || d.datname END,
                                              ', ')
                 FROM waiting w JOIN pg_catalog.pg_database d ON d.oid = w.database
                 WHERE w.relation IS NOT NULL), ''),
       coalesce(extract(epoch FROM now() - a.xact_start)::bigint::text, '')
FROM pg_catalog.pg_stat_activity a WHERE a.pid = ANY (pg_catalog.pg_blocking_pids($1::int)) ORDER BY a.pid
)SQL";

// Who holds the locks the apply backend waits for, read on a second connection.
class BlockerWatch {
 public:
  BlockerWatch(const AgentConfig& config, JobContext& ctx, std::string datname)
      : config_(config), ctx_(ctx), datname_(std::move(datname)) {}

  void NewTry(int attempt, int max_tries) {
    attempt_ = attempt;
    max_tries_ = max_tries;
    seen_this_try_.clear();
  }

  // Called while a hop runs; cheap enough to run every poll interval.
  void Look(int apply_pid, std::chrono::milliseconds running_for) {
    if (running_for < std::chrono::milliseconds(50)) return;
    try {
      if (!monitor_ || !monitor_->Ok())
        monitor_ = ConnectProduction(config_, "safe-upgrade-agent apply-monitor", datname_);
      auto r = monitor_->Exec(kBlockersQuery, {std::to_string(apply_pid)});
      for (const auto& row : r.rows) {
        int pid = std::stoi(*row[0]);
        if (!seen_this_try_.insert(pid).second) continue;
        json b = {{"pid", pid},
                  {"usename", row[1].value_or("")},
                  {"application_name", row[2].value_or("")},
                  {"state", row[3].value_or("")},
                  {"wait_event", row[4].value_or("")},
                  {"lock_mode", row[5].value_or("")},
                  {"relation", row[6].value_or("")},
                  {"transaction_age_s", row[7]->empty() ? json(nullptr) : json(std::stoll(*row[7]))},
                  {"attempt", attempt_},
                  {"datname", datname_}};
        blockers_[pid] = b;
        ctx_.Event("applying", "warning",
                   "database " + datname_ + ", try " + std::to_string(attempt_) + " of " +
                       std::to_string(max_tries_) + ": ALTER EXTENSION waits for a lock held by " +
                       DescribeBlocker(b),
                   b);
      }
    } catch (const std::exception& e) {
      // Watching is best effort; it must never fail the apply.
      spdlog::warn("upgrade {}: could not read the blockers of the apply: {}", ctx_.upgrade_id(), e.what());
      monitor_.reset();
    }
  }

  json All() const {
    json out = json::array();
    for (const auto& [pid, b] : blockers_) out.push_back(b);
    return out;
  }
  std::string Summary() const {
    std::string out;
    for (const auto& [pid, b] : blockers_) out += (out.empty() ? "" : "; ") + DescribeBlocker(b);
    return out;
  }

 private:
  const AgentConfig& config_;
  JobContext& ctx_;
  std::string datname_;
  std::unique_ptr<PgConn> monitor_;
  std::map<int, json> blockers_;
  std::set<int> seen_this_try_;
  int attempt_ = 0, max_tries_ = 0;
};

void JournalApply(JobContext& ctx, ApplyState state, const std::optional<std::string>& error = std::nullopt) {
  ctx.journal().Update(ctx.upgrade_id(), [&](JournalDoc& doc) {
    doc.apply = state;
    doc.apply_at[state] = NowIso8601();
    if (error) doc.apply_error = error;
  });
}

// The connection broke while COMMIT was in flight. Once the old backend is gone its transaction
// has either committed or not, and the installed version says which.
bool ResolveLostCommit(JobContext& ctx, const UpgradeRecord& upgrade, const std::string& datname,
                       int old_pid) {
  auto deadline = Clock::now() + std::chrono::minutes(2);
  while (true) {
    try {
      auto conn = ConnectProduction(ctx.config(), "safe-upgrade-agent apply-resolve", datname);
      bool gone =
          conn->Exec("SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1::int)",
                     {std::to_string(old_pid)})
              .Scalar() == "t";
      if (gone) {
        std::string version = InstalledVersion(*conn, upgrade.extname);
        ctx.Event("applying", "warning",
                  "the connection was lost during COMMIT; " + upgrade.extname + " is now at " + version +
                      " in database " + datname);
        return version == upgrade.to_version;
      }
    } catch (const std::exception& e) {
      if (Clock::now() > deadline) throw;
    }
    if (Clock::now() > deadline)
      throw std::runtime_error("the connection was lost during COMMIT and its backend " +
                               std::to_string(old_pid) +
                               " did not go away within 2 minutes; the outcome is unknown");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

std::chrono::milliseconds Backoff(int attempt) {
  static std::mt19937 rng(std::random_device{}());
  long base = std::min(5000L, 250L << std::min(attempt - 1, 5));
  return std::chrono::milliseconds(base + std::uniform_int_distribution<long>(0, 100)(rng));
}

// The journal's word for how far the apply got in every database.
ApplyState ApplyStateOf(size_t committed, size_t databases) {
  if (committed == 0) return ApplyState::kNotCommitted;
  return committed == databases ? ApplyState::kCommitted : ApplyState::kPartiallyCommitted;
}

struct DatabaseApply {
  json result;
  bool committed = false;
  std::string failure;  // why it did not commit
};

// One database: its own transaction, hop by hop, under lock_timeout with retries.
DatabaseApply ApplyInDatabase(JobContext& ctx, const UpgradeRecord& upgrade, const UpgradeDatabase& db,
                              PgConn& conn) {
  const AgentConfig& config = ctx.config();
  auto started = Clock::now();
  // The extension, then its family (the extensions that require it), in one transaction.
  auto hops = PlanUpgrade(upgrade.extname, db, upgrade.to_version, db.from_version);
  const std::string with_family = WithFamily(db);
  const int max_tries = 1 + std::max(0, upgrade.MaxLockRetries());
  const std::string lock_timeout = upgrade.LockTimeout();
  std::string statement_timeout = std::to_string(std::max(60, config.job_timeout_s)) + "s";
  if (upgrade.options.contains("statement_timeout") && upgrade.options["statement_timeout"].is_string())
    statement_timeout = upgrade.options["statement_timeout"].get<std::string>();

  BlockerWatch watch(config, ctx, db.datname);
  UpgradeOutcome outcome;
  int attempt = 0;
  const int apply_pid = conn.BackendPid();
  ctx.journal().Update(ctx.upgrade_id(), [&](JournalDoc& doc) {
    doc.apply_databases[db.datname] = DatabaseApplyState::kStarted;
    doc.apply_backend_pid = apply_pid;
  });
  ctx.Info("applying",
           "applying " + upgrade.extname + " " + db.from_version + " -> " + upgrade.to_version +
               " in database " + db.datname + with_family + " (" + std::to_string(HopCount(hops)) +
               " hop(s), lock_timeout " + lock_timeout + ", up to " + std::to_string(max_tries) + " tries)",
           {{"backend_pid", apply_pid}, {"datname", db.datname}});
  for (attempt = 1; attempt <= max_tries; ++attempt) {
    watch.NewTry(attempt, max_tries);
    UpgradeRunOptions opt;
    opt.lock_timeout = lock_timeout;
    opt.statement_timeout = statement_timeout;
    opt.poll_interval = std::chrono::milliseconds(100);
    opt.while_running = [&](std::chrono::milliseconds running_for) { watch.Look(apply_pid, running_for); };
    opt.on_hop = [&](const Hop& h) {
      ctx.Info("applying",
               "database " + db.datname + ": hop " + h.Name() +
                   (h.extname == upgrade.extname ? "" : " of " + h.extname) + " took " +
                   std::to_string(h.duration_ms) + " ms (not committed yet)",
               {{"from", h.from}, {"to", h.to}, {"duration_ms", h.duration_ms}, {"datname", db.datname}});
    };
    outcome = RunUpgrade(conn, hops, opt);
    if (outcome.committed || !outcome.LockTimeout() || attempt == max_tries || ctx.Stopping()) break;
    auto wait = Backoff(attempt);
    ctx.Event("applying", "warning",
              "database " + db.datname + ", try " + std::to_string(attempt) + " of " +
                  std::to_string(max_tries) + " could not get its locks within " + lock_timeout + " (" +
                  outcome.FailureMessage() + "); trying again in " + std::to_string(wait.count()) + " ms");
    std::this_thread::sleep_for(wait);
  }
  attempt = std::min(attempt, max_tries);

  DatabaseApply out;
  out.committed = outcome.committed;
  if (!out.committed && outcome.commit_outcome_unknown)
    out.committed = ResolveLostCommit(ctx, upgrade, db.datname, apply_pid);
  ctx.journal().Update(ctx.upgrade_id(), [&](JournalDoc& doc) {
    doc.apply_databases[db.datname] =
        out.committed ? DatabaseApplyState::kCommitted : DatabaseApplyState::kNotCommitted;
  });
  out.result = outcome.ToJson();
  out.result["datname"] = db.datname;
  out.result["attempts"] = attempt;
  out.result["max_tries"] = max_tries;
  out.result["lock_timeout"] = lock_timeout;
  out.result["blockers"] = watch.All();
  out.result["from_version"] = db.from_version;
  out.result["to_version"] = upgrade.to_version;
  out.result["duration_ms"] = MsSince(started);
  out.result["committed"] = out.committed;
  if (out.committed) {
    out.result.erase("error");
    ctx.Info("applying",
             upgrade.extname + " upgraded to " + upgrade.to_version + " in database " + db.datname +
                 with_family + " (try " + std::to_string(attempt) + " of " + std::to_string(max_tries) + ")",
             {{"lock_profile", outcome.lock_profile}, {"datname", db.datname}});
    return out;
  }
  if (outcome.LockTimeout()) {
    out.failure = "could not get the locks for ALTER EXTENSION " + upgrade.extname + " UPDATE in database " +
                  db.datname + ": " + std::to_string(attempt) + " tries with lock_timeout " + lock_timeout +
                  " failed";
    std::string blockers = watch.Summary();
    out.failure += blockers.empty() ? " (the blocking sessions ended before they could be recorded)"
                                    : "; blocked by " + blockers;
  } else {
    out.failure = "database " + db.datname + ": " + outcome.FailureMessage();
  }
  return out;
}

}  // namespace

json RunApplyJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t id = ctx.upgrade_id();
  const std::string sid = std::to_string(id);
  auto started = Clock::now();

  std::string already = ToString(ctx.journal().Load(id).apply);
  if (already != "none")
    throw JobFailure("upgrade " + sid + " was already applied once (journal: apply " + already +
                         "); an upgrade is applied to production at most once, so it is not applied again",
                     {{"refused", true}, {"journal_apply", already}});

  auto control = ConnectProduction(config, "safe-upgrade-agent apply");
  UpgradeRecord upgrade = LoadUpgrade(*control, id);
  // Only an upgrade the scheduler moved to applying (after its dry run and restore point) may
  // touch production.
  if (upgrade.state != "applying")
    throw JobFailure("upgrade " + sid + " is " + upgrade.state + ", not applying; production is not touched",
                     {{"refused", true}, {"state", upgrade.state}});
  auto restore_point = LoadRestorePoint(*control, id);
  if (!restore_point)
    throw JobFailure("upgrade " + sid + " has no restore point; production is not touched without one",
                     {{"refused", true}});
  // The rollback is proven possible before production is touched.
  json wal_proof = ProveRollbackWal(config, id, *restore_point);
  ctx.Info("applying",
           "the archive holds every WAL segment a rollback to " + restore_point->name + " replays (" +
               std::to_string(wal_proof.value("segments", 0)) + " segment(s) from " +
               wal_proof.value("from_lsn", "") + " to " + restore_point->lsn + ")",
           wal_proof);
  // So is the fast one: the parked target promoted at the restore point and stopped.
  ParkBeforeApply(ctx, {restore_point->name, restore_point->lsn, restore_point->timeline},
                  upgrade.options.value("rollback_target", "auto"));
  // Every database is where the plan left it before any is touched.
  std::vector<std::unique_ptr<PgConn>> conns;
  for (const auto& db : upgrade.databases) {
    conns.push_back(ConnectProduction(config, "safe-upgrade-agent apply", db.datname));
    std::string current = InstalledVersion(*conns.back(), upgrade.extname);
    if (current != db.from_version)
      throw JobFailure("extension " + upgrade.extname + " is at version " +
                           (current.empty() ? "(none)" : current) + " in database " + db.datname + ", not " +
                           db.from_version + " as planned; production is not touched",
                       {{"refused", true}, {"extversion", current}, {"datname", db.datname}});
    for (const auto& member : db.family) {
      std::string at = InstalledVersion(*conns.back(), member.extname);
      if (at != member.from_version)
        throw JobFailure("extension " + member.extname + ", which is upgraded with " + upgrade.extname + ", is at version " +
                             (at.empty() ? "(none)" : at) + " in database " + db.datname + ", not " +
                             member.from_version + " as planned; production is not touched",
                         {{"refused", true}, {"extname", member.extname}, {"extversion", at}, {"datname", db.datname}});
    }
  }

  // Claim the one application: check and set in one journal update, durable before BEGIN.
  std::string seen;
  ctx.journal().Update(id, [&](JournalDoc& doc) {
    seen = ToString(doc.apply);
    if (doc.apply != ApplyState::kNone) return;
    doc.apply = ApplyState::kStarted;
    doc.apply_at[ApplyState::kStarted] = NowIso8601();
    doc.apply_job = ctx.job_id();
    doc.apply_databases.clear();
  });
  if (seen != "none")
    throw JobFailure(
        "upgrade " + sid + " was already applied once (journal: apply " + seen + "); it is not applied again",
        {{"refused", true}, {"journal_apply", seen}});

  json stale_before = LookAtStaleSessions(ctx, upgrade, conns, false);
  json results = json::array();
  json flat = {{"hops", json::array()}, {"lock_profile", json::array()}, {"blockers", json::array()}};
  std::vector<std::string> committed;
  std::string failure;
  try {
    for (size_t i = 0; i < upgrade.databases.size(); ++i) {
      if (i > 0) ctx.Failpoint("apply:between_databases");
      DatabaseApply one = ApplyInDatabase(ctx, upgrade, upgrade.databases[i], *conns[i]);
      results.push_back(one.result);
      for (const char* list : {"hops", "lock_profile", "blockers"})
        AppendForDatabase(flat[list], one.result.value(list, json::array()), upgrade.databases[i].datname);
      if (!one.committed) {
        failure = one.failure;
        break;
      }
      committed.push_back(upgrade.databases[i].datname);
    }
  } catch (const std::exception& e) {
    // BEGIN itself failed (a connection is gone): COMMIT was never sent there.
    JournalApply(ctx, ApplyStateOf(committed.size(), upgrade.databases.size()), std::string(e.what()));
    throw;
  }

  json result = {{"databases", results},
                 {"committed_databases", committed},
                 {"to_version", upgrade.to_version},
                 {"restore_point", restore_point->name},
                 {"duration_ms", MsSince(started)}};
  result.update(flat);
  result["stale_sessions_before"] = stale_before["sessions"];
  if (failure.empty()) {
    ctx.Failpoint("apply:after_commit");
    JournalApply(ctx, ApplyState::kCommitted);
    result["committed"] = true;
    json stale_after = LookAtStaleSessions(ctx, upgrade, conns, true);
    result["stale_sessions"] = stale_after["sessions"];
    result["stale_libraries"] = stale_after["libraries"];
    result["recycled_sessions"] = stale_after.value("recycled", json::object());
    return result;
  }

  JournalApply(ctx, ApplyStateOf(committed.size(), upgrade.databases.size()), failure);
  result["committed"] = false;
  result["partially_committed"] = !committed.empty();
  if (committed.empty()) {
    // Not applied anywhere: nothing will be rolled back, so the parked target only holds disk.
    ReleaseRollbackTarget(ctx, "applying", "the upgrade was not applied");
    throw JobFailure(
        failure + "; production is unchanged (" + upgrade.extname + " was not upgraded in any database)",
        result);
  }
  std::string list;
  for (const auto& d : committed) list += (list.empty() ? "" : ", ") + d;
  throw JobFailure(failure + "; the upgrade had committed in database " + list +
                       ", so the cluster is no longer as the plan left it and must be rolled back",
                   result);
}

}  // namespace safe_upgrade
