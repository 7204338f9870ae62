// Faults that must never let an upgrade lie or run without a way back: an archive_command that
// archives nothing, two upgrades whose rollbacks could undo each other, verification that cannot
// run, and a rollback asked for an apply that never committed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "../integration/agent_job_helpers.h"
#include "base/fs_util.h"
#include "fault_report.h"
#include "fixtures.h"
#include "postgres/pg_conn.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

std::string ExtVersion(const TestCluster& c, const std::string& ext) {
  return c.Scalar("SELECT extversion FROM pg_extension WHERE extname = $1", {ext});
}

// archive_command = '/bin/true': the archiver reports success, the agent's archive gets nothing.
void ArchiveNothing(const TestCluster& c) {
  c.Exec("ALTER SYSTEM SET archive_command = '/bin/true'");
  c.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SHOW archive_command") == "/bin/true"; }, 30s));
}

// The SQLSTATE and message of a statement that must fail ("" when it succeeded).
std::string FailureOf(const TestCluster& c, const std::string& sql) {
  try {
    c.Exec(sql);
  } catch (const PgError& e) {
    return e.sqlstate() + " " + e.Full();
  }
  return "";
}

// su_fixture_locking 1.0 -> 1.1 begun while a session holds a lock its script needs, so the apply
// waits (lock timeouts and retries as the options say) until the blocker goes.
struct LockedUpgrade {
  std::unique_ptr<PgConn> blocker;
  int64_t id = 0;
};
LockedUpgrade BeginWhileLocked(const TestCluster& c, const std::string& options) {
  c.Exec("CREATE EXTENSION su_fixture_locking VERSION '1.0'");
  LockedUpgrade out;
  out.blocker = c.Connect();
  out.blocker->ExecScript("BEGIN; LOCK TABLE su_locking_items IN ACCESS SHARE MODE;");
  out.id = c.BeginUpgrade("su_fixture_locking", "1.1", options);
  return out;
}

TEST(ArchiveThatArchivesNothing, plan_and_begin_refuse_it_before_anything_starts) {
  RecordFault(
      "`archive_command = '/bin/true'` (the server believes WAL is archived; the agent's archive gets "
      "none), then `plan` and `begin`",
      "`plan` verdict blocked with the reason; `begin` refused with 55000; no upgrade row, production "
      "untouched");
  TestCluster c;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  ArchiveNothing(c);
  c.Exec("CREATE TABLE wal_maker AS SELECT g FROM generate_series(1, 1000) g");
  c.Exec("SELECT pg_switch_wal()");
  const std::string reason = "does not archive into the archive a rollback reads";
  // The agent's view is refreshed by the worker's next ping after the archiver's claim.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text").find(reason) != std::string::npos;
      },
      90s, 500ms))
      << c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text");
  EXPECT_EQ(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8') ->> 'verdict'"), "blocked");
  std::string refused = FailureOf(c, "SELECT safe_upgrade.begin('hstore', '1.8')");
  EXPECT_EQ(refused.substr(0, 5), "55000") << refused;
  EXPECT_NE(refused.find(reason), std::string::npos) << refused;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
  EXPECT_EQ(ExtVersion(c, "hstore"), "1.4");
}

TEST(ArchiveThatArchivesNothing, the_apply_refuses_when_the_rollback_wal_is_not_in_the_archive) {
  RecordFault(
      "`archive_command = '/bin/true'` set after the snapshot, so the restore point's WAL segment never "
      "reaches the archive, then the apply job",
      "the apply is refused before `ALTER EXTENSION` (missing segment named); extension unchanged; journal "
      "has no apply");
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  int64_t id = InsertUpgrade(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");
  TakeSnapshot(c, id);
  ArchiveNothing(c);
  c.Scalar(
      "WITH rp AS (SELECT pg_create_restore_point('su_test_' || $1) AS lsn) "
      "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, wal_segment) "
      "SELECT $1::bigint, 'su_test_' || $1, rp.lsn, 1, pg_walfile_name(rp.lsn) FROM rp RETURNING name",
      {std::to_string(id)});
  c.Exec("SELECT pg_switch_wal()");
  SetState(c, id, "applying");
  auto job = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("is not in the archive"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("production is not touched"), std::string::npos) << job.error;
  EXPECT_EQ(ExtVersion(c, "su_fixture_counter"), "1.0");
  EXPECT_EQ(ReadJournal(c, id).value("apply", "none"), "none");
}

TEST(TwoUpgradesAtOnce, a_rollback_never_strands_the_other_upgrade_and_states_match_the_catalog) {
  RecordFault(
      "upgrades of two extensions at once: B waits while A is past its restore point, A fails on "
      "production and rolls back (new timeline) after B's snapshot",
      "B waits in `scheduled` (event names A), A `rolled_back` at 1.0; B, on the new timeline, ends `failed` "
      "with the timeline reason, hstore untouched; nothing stuck");
  TestCluster c;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  PrepareRollbackFixture(c);
  // B first, so both snapshots are taken on timeline 1; B waits for approval.
  int64_t b = c.BeginUpgrade("hstore", "1.8", R"({"require_approval": true})");
  ASSERT_TRUE(c.WaitForState(b, "awaiting_approval", 300s)) << c.Events(b);
  // A is held in applying by a session holding its table lock.
  auto blocker = c.Connect();
  blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  int64_t a =
      c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"lock_timeout": "500ms", "max_lock_retries": 100})");
  ASSERT_TRUE(c.WaitForState(a, "applying", 300s)) << c.Events(a);
  // Data the dry run did not see, which 2.0 rejects: A's verification fails on production.
  c.Exec("INSERT INTO poison VALUES (5000)");
  c.Exec("SELECT safe_upgrade.approve(" + std::to_string(b) + ")");
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Events(b).find("waiting for upgrade " + std::to_string(a)) != std::string::npos; }, 60s))
      << c.Events(b);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(b)}),
            "0")
      << "B must not create a restore point while A may still roll back";
  blocker.reset();
  ASSERT_EQ(c.WaitForTerminalState(a, 300s), "rolled_back") << c.Events(a);
  EXPECT_EQ(ExtVersion(c, "su_rollback_fixture"), "1.0");
  // The rollback rewound the catalog to A's restore point, where B still awaited approval.
  std::string b_state =
      c.Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(b)});
  if (b_state == "awaiting_approval") c.Exec("SELECT safe_upgrade.approve(" + std::to_string(b) + ")");
  ASSERT_EQ(c.WaitForTerminalState(b, 120s), "failed") << c.Events(b);
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(b)});
  EXPECT_NE(error.find("timeline"), std::string::npos) << error;
  EXPECT_NE(error.find("production was not touched"), std::string::npos) << error;
  EXPECT_EQ(ExtVersion(c, "hstore"), "1.4");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(b)}),
            "0");
}

TEST(VerificationCannotRun, it_retries_with_backoff_and_never_rolls_back_by_itself) {
  RecordFault(
      "after a committed apply, production refuses the agent's login (role NOLOGIN), so the health checks "
      "cannot connect; login restored later",
      "stays `verifying`, retrying with growing delays, no rollback; `succeeded` once the checks can run");
  TestCluster c;
  c.Exec("CREATE ROLE su_test_admin SUPERUSER LOGIN");
  PgConn admin(c.ConnInfo() + " user=su_test_admin");
  c.Exec("CREATE EXTENSION su_fixture_lockout VERSION '1.0'");
  int64_t id = c.BeginUpgrade("su_fixture_lockout", "1.1");
  const std::string sid = std::to_string(id);
  auto events = [&] {
    std::string out;
    for (const auto& row :
         admin
             .Exec("SELECT phase || ' ' || level || ' ' || message FROM safe_upgrade.events "
                   "WHERE upgrade_id = $1::bigint ORDER BY id",
                   {sid})
             .rows)
      out += row[0].value_or("") + "\n";
    return out;
  };
  auto state = [&] {
    return admin.Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {sid}).Scalar();
  };
  bool retried_twice = WaitUntil(
      [&] {
        std::string e = events();
        size_t first = e.find("verification could not run");
        return first != std::string::npos &&
               e.find("verification could not run", first + 1) != std::string::npos;
      },
      120s, 200ms);
  std::string seen = events();
  std::string seen_state = state();
  admin.Exec("ALTER ROLE postgres LOGIN");
  ASSERT_TRUE(retried_twice) << seen;
  EXPECT_EQ(seen_state, "verifying") << seen;
  EXPECT_NE(seen.find("trying again in 5 s"), std::string::npos) << seen;
  EXPECT_NE(seen.find("trying again in 10 s"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("rolling back"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("health checks failed"), std::string::npos) << seen;
  ASSERT_EQ(c.WaitForTerminalState(id, 120s), "succeeded") << c.Events(id);
  EXPECT_EQ(ExtVersion(c, "su_fixture_lockout"), "1.1");
}

TEST(RollbackOfAnApplyThatNeverCommitted, is_refused_and_changes_nothing) {
  RecordFault("`rollback()` of an upgrade that failed on a lock timeout (its apply never committed)",
              "refused with 55000 and a hint; state stays `failed`; the server is not restarted");
  TestCluster c;
  auto locked = BeginWhileLocked(c, R"({"lock_timeout": "200ms", "max_lock_retries": 0})");
  const int64_t id = locked.id;
  ASSERT_EQ(c.WaitForTerminalState(id, 300s), "failed") << c.Events(id);
  locked.blocker.reset();
  std::string started = c.Scalar("SELECT pg_postmaster_start_time()::text");
  std::string refused = FailureOf(c, "SELECT safe_upgrade.rollback(" + std::to_string(id) + ")");
  EXPECT_EQ(refused.substr(0, 5), "55000") << refused;
  EXPECT_NE(refused.find("its apply never committed"), std::string::npos) << refused;
  EXPECT_EQ(c.Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)}),
            "failed");
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started);
  EXPECT_EQ(ExtVersion(c, "su_fixture_locking"), "1.0");
}

TEST(ApplyJobFailsAfterCommit, the_upgrade_is_verified_not_reported_failed) {
  RecordFault(
      "the apply commits, then its journal write fails (journal directory made read-only), so the apply "
      "job fails after COMMIT",
      "resolved from the installed version: `verifying`, then `succeeded` at the target version; never "
      "`failed`");
  TestCluster c;
  auto locked = BeginWhileLocked(c, R"({"lock_timeout": "500ms", "max_lock_retries": 100})");
  const int64_t id = locked.id;
  ASSERT_TRUE(
      WaitUntil([&] { return c.Events(id).find("waits for a lock held by pid") != std::string::npos; }, 300s))
      << c.Events(id);
  const std::string journal_dir = c.info().agent_config.JournalDir();
  ASSERT_EQ(chmod(journal_dir.c_str(), 0500), 0);
  locked.blocker.reset();
  bool verifying = WaitUntil(
      [&] { return c.Events(id).find("so the apply committed: verifying it") != std::string::npos; }, 120s);
  std::string state =
      c.Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  chmod(journal_dir.c_str(), 0700);
  ASSERT_TRUE(verifying) << c.Events(id);
  EXPECT_NE(state, "failed") << c.Events(id);
  ASSERT_EQ(c.WaitForTerminalState(id, 300s), "succeeded") << c.Events(id);
  EXPECT_EQ(ExtVersion(c, "su_fixture_locking"), "1.1");
}

}  // namespace
}  // namespace safe_upgrade::testing
