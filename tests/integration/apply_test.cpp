// The apply and verify jobs on production: bounded lock retries that name the blocker and leave
// production unchanged, one application per upgrade (the journal refuses a second one, also after
// a crash right after COMMIT), a failing hop rolls every hop back, and verify tells a failed check
// (checks_failed) from an unreachable server.
//
// The tests drive the agent directly (the scheduler is off): they insert the upgrade row in state
// applying with a restore point, as the scheduler would have left it.
#include <gtest/gtest.h>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "postgres/pg_conn.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

ClusterOptions SchedulerOff() { return ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}}; }

std::string ExtVersion(const TestCluster& c, const std::string& ext) {
  return c.Scalar("SELECT extversion FROM pg_extension WHERE extname = $1", {ext});
}

// The apply's result in the (only) database of the upgrade.
json OnlyDatabase(const json& result) { return result.at("databases").at(0); }

TEST(Apply, lock_contention_fails_after_bounded_retries_naming_the_blocker_and_changes_nothing) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_locking");
  c.Exec("INSERT INTO su_locking_items VALUES (1, 'one')");
  std::string started_at = c.Scalar("SELECT pg_postmaster_start_time()::text");

  // A session that read the table and stays in its transaction holds AccessShareLock on it.
  PgConn blocker(ConnInfo(c.info().socket_dir, c.info().port, "postgres", "postgres", "su-test-blocker"));
  blocker.ExecScript("BEGIN");
  blocker.Exec("SELECT count(*) FROM su_locking_items");
  int blocker_pid = blocker.BackendPid();

  int64_t id = ReadyToApply(c, "su_fixture_locking", "1.0", "1.1", {"1.0", "1.1"},
                            {{"lock_timeout", "300ms"}, {"max_lock_retries", 2}});
  auto t0 = std::chrono::steady_clock::now();
  auto job = RunAgentJob(c, JobKind::kApply, id, 120s);
  auto elapsed = std::chrono::steady_clock::now() - t0;

  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("3 tries"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("pid " + std::to_string(blocker_pid)), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("holds AccessShareLock on su_locking_items"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("production is unchanged"), std::string::npos) << job.error;
  std::string events = job.EventText();
  EXPECT_NE(events.find("waits for a lock held by pid " + std::to_string(blocker_pid)), std::string::npos)
      << events;
  EXPECT_NE(events.find("su-test-blocker"), std::string::npos) << events;
  EXPECT_NE(events.find("holds AccessShareLock on su_locking_items"), std::string::npos) << events;
  // events is readable by PUBLIC: another session's query text stays in pg_stat_activity, which
  // shows it only to those allowed to see it.
  EXPECT_EQ(events.find("SELECT count(*)"), std::string::npos) << events;
  EXPECT_EQ(job.error.find("SELECT count(*)"), std::string::npos) << job.error;
  EXPECT_EQ(OnlyDatabase(job.result)["attempts"], 3);
  ASSERT_FALSE(job.result["blockers"].empty()) << job.result.dump(2);
  EXPECT_EQ(job.result["blockers"][0]["pid"], blocker_pid);
  EXPECT_LT(elapsed, 60s) << "retries must be bounded";

  EXPECT_EQ(ExtVersion(c, "su_fixture_locking"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = 'su_locking_items'::regclass "
                     "AND attname = 'note'"),
            "0");
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started_at) << "the server must not restart";
  EXPECT_EQ(ReadJournal(c, id).value("apply", ""), "not_committed");
  // The blocking session was left alone.
  EXPECT_EQ(blocker.Exec("SELECT count(*) FROM su_locking_items").Scalar(), "1");
  blocker.ExecScript("COMMIT");
}

TEST(Apply, lock_wait_that_clears_within_the_retries_applies_once) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_locking");
  PgConn blocker(ConnInfo(c.info().socket_dir, c.info().port, "postgres", "postgres", "su-test-blocker"));
  blocker.ExecScript("BEGIN");
  blocker.Exec("SELECT count(*) FROM su_locking_items");
  int64_t id = ReadyToApply(c, "su_fixture_locking", "1.0", "1.1", {"1.0", "1.1"},
                            {{"lock_timeout", "300ms"}, {"max_lock_retries", 20}});

  auto client = AgentClient::Create(c.info().agent_config.listen, 10000);
  std::string job_id;
  ASSERT_TRUE(client->StartJob(JobKind::kApply, id, job_id).ok);
  // Let the first try time out on the lock, then release it.
  ASSERT_TRUE(WaitUntil(
      [&] {
        AgentJob j;
        client->GetJob(job_id, 0, j);
        for (const auto& e : j.events)
          if (e.message.find("could not get its locks") != std::string::npos) return true;
        return false;
      },
      60s));
  blocker.ExecScript("COMMIT");

  FinishedJob job;
  ASSERT_TRUE(WaitUntil(
      [&] {
        AgentJob j;
        if (!client->GetJob(job_id, 0, j).ok || j.state == "running") return false;
        job.state = j.state;
        job.error = j.error;
        job.result = json::parse(j.result_json);
        return true;
      },
      60s));
  ASSERT_EQ(job.state, "succeeded") << job.error;
  EXPECT_GE(OnlyDatabase(job.result)["attempts"].get<int>(), 2);
  EXPECT_EQ(job.result["committed"], true);
  EXPECT_EQ(ExtVersion(c, "su_fixture_locking"), "1.1");
  EXPECT_EQ(ReadJournal(c, id).value("apply", ""), "committed");
  // The upgrade took AccessExclusiveLock on the table, and the lock profile says so.
  bool exclusive = false;
  for (const auto& l : job.result["lock_profile"])
    if (l["object"] == "su_locking_items" && l["mode"] == "AccessExclusiveLock") exclusive = true;
  EXPECT_TRUE(exclusive) << job.result["lock_profile"].dump(2);
}

TEST(Apply, upgrade_is_applied_once_and_a_second_apply_is_refused_by_the_journal) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  int64_t id = ReadyToApply(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"});

  auto first = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(first.state, "succeeded") << first.error << "\n" << first.EventText();
  EXPECT_EQ(first.result["committed"], true);
  EXPECT_EQ(OnlyDatabase(first.result)["attempts"], 1);
  ASSERT_EQ(first.result["hops"].size(), 1u);
  EXPECT_FALSE(first.result["lock_profile"].empty());
  EXPECT_EQ(ExtVersion(c, "su_fixture_counter"), "1.1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_counter_runs"), "1");
  EXPECT_EQ(ReadJournal(c, id).value("apply", ""), "committed");

  auto second = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(second.state, "failed");
  EXPECT_NE(second.error.find("already applied once"), std::string::npos) << second.error;
  EXPECT_EQ(second.result["refused"], true);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_counter_runs"), "1");
  EXPECT_EQ(c.Scalar("SELECT last_value FROM su_counter_attempts"), "1") << "the script ran again";
}

TEST(Apply, agent_crash_right_after_commit_never_leads_to_a_second_application) {
  ClusterOptions options = SchedulerOff();
  options.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "apply:after_commit"}};
  TestCluster c(options);
  c.Exec("CREATE EXTENSION su_fixture_counter");
  int64_t id = ReadyToApply(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"});

  auto client = AgentClient::Create(c.info().agent_config.listen, 10000);
  std::string job_id;
  ASSERT_TRUE(client->StartJob(JobKind::kApply, id, job_id).ok);
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 60s)) << "the failpoint did not kill the agent";
  EXPECT_EQ(ExtVersion(c, "su_fixture_counter"), "1.1");
  EXPECT_EQ(ReadJournal(c, id).value("apply", ""), "started")
      << "the crash came before the journal said committed";

  c.StartAgent();  // without the failpoint
  // The crashed agent's socket file is still there until the new agent replaces it.
  ASSERT_TRUE(WaitUntil(
      [&] {
        AgentPing ping;
        return AgentClient::Create(c.info().agent_config.listen, 2000)->Ping(ping).ok;
      },
      30s));
  auto again = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(again.state, "failed");
  EXPECT_NE(again.error.find("already applied once (journal: apply started)"), std::string::npos)
      << again.error;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_counter_runs"), "1");
  EXPECT_EQ(c.Scalar("SELECT last_value FROM su_counter_attempts"), "1");
}

TEST(Apply, failing_middle_hop_rolls_back_every_hop_and_is_named) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_multihop");
  int64_t id = ReadyToApply(c, "su_fixture_multihop", "1.0", "1.3", {"1.0", "1.1", "1.2", "1.3"});
  auto job = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("hop 1.1 -> 1.2 failed"), std::string::npos) << job.error;
  EXPECT_EQ(OnlyDatabase(job.result)["attempts"], 1) << "only lock timeouts are retried";
  EXPECT_EQ(ExtVersion(c, "su_fixture_multihop"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT to_regproc('su_multihop_added_in_1_1') IS NULL"), "t")
      << "hop 1.0 -> 1.1 stayed";
  EXPECT_EQ(ReadJournal(c, id).value("apply", ""), "not_committed");
}

TEST(Apply, apply_refuses_an_upgrade_that_is_not_in_state_applying) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  int64_t id = InsertUpgrade(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"}, "blocked");
  auto job = RunAgentJob(c, JobKind::kApply, id);
  ASSERT_EQ(job.state, "failed");
  EXPECT_NE(job.error.find("not applying"), std::string::npos) << job.error;
  EXPECT_EQ(ExtVersion(c, "su_fixture_counter"), "1.0");
  EXPECT_EQ(ReadJournal(c, id).value("apply", "none"), "none");
}

// Applies ext 1.0 -> 1.1 (which must succeed), then runs the verify job as the scheduler would.
FinishedJob ApplyThenVerify(const TestCluster& c, const std::string& ext, int64_t* upgrade_id = nullptr) {
  int64_t id = ReadyToApply(c, ext, "1.0", "1.1", {"1.0", "1.1"});
  if (upgrade_id) *upgrade_id = id;
  auto apply = RunAgentJob(c, JobKind::kApply, id);
  EXPECT_EQ(apply.state, "succeeded") << apply.error << "\n" << apply.EventText();
  SetState(c, id, "verifying");
  return RunAgentJob(c, JobKind::kVerify, id);
}

TEST(Apply, verify_reports_a_failing_user_check_as_checks_failed_and_an_unreachable_server_as_neither) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_badcheck");
  c.Scalar(
      "INSERT INTO safe_upgrade.health_checks (name, check_sql, extname) VALUES "
      "('double_still_doubles', 'SELECT su_badcheck_double(21) = 42', 'su_fixture_badcheck') RETURNING id");
  int64_t id = 0;
  auto verify = ApplyThenVerify(c, "su_fixture_badcheck", &id);
  ASSERT_EQ(verify.state, "failed") << verify.EventText();
  EXPECT_NE(verify.error.find("double_still_doubles"), std::string::npos) << verify.error;
  EXPECT_NE(verify.error.find("returned false"), std::string::npos) << verify.error;
  EXPECT_EQ(verify.result["checks_failed"], true) << verify.result.dump(2);
  EXPECT_EQ(verify.failure, JobFailureKind::kChecksFailed);
  bool builtin_version_ok = false;
  for (const auto& ch : verify.result["checks"])
    if (ch["name"] == "extension_version" && ch["ok"] == true) builtin_version_ok = true;
  EXPECT_TRUE(builtin_version_ok) << verify.result.dump(2);

  c.StopServer("fast");
  auto unreachable = RunAgentJob(c, JobKind::kVerify, id);
  ASSERT_EQ(unreachable.state, "failed");
  EXPECT_FALSE(unreachable.result.value("checks_failed", false)) << unreachable.result.dump(2);
  // The agent refuses to start the job, or the job fails to connect; either way it says why.
  EXPECT_NE(unreachable.error.find("connection to server"), std::string::npos) << unreachable.error;
  c.StartServer();
}

TEST(Apply, verify_passes_when_every_check_passes) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  c.Exec("CREATE VIEW counter_view AS SELECT count(*) AS runs FROM su_counter_runs");
  c.Scalar(
      "INSERT INTO safe_upgrade.health_checks (name, check_sql, extname) VALUES "
      "('ran_once', 'SELECT count(*) = 1 FROM su_counter_runs', 'su_fixture_counter') RETURNING id");
  auto verify = ApplyThenVerify(c, "su_fixture_counter");
  ASSERT_EQ(verify.state, "succeeded") << verify.error << "\n" << verify.EventText();
  EXPECT_FALSE(verify.result["checks"].empty());
  for (const auto& ch : verify.result["checks"]) EXPECT_TRUE(ch["ok"].get<bool>()) << ch.dump();
}

TEST(Apply, verify_fails_an_operators_check_that_resets_its_role_to_reach_the_agents_superuser) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  c.Exec("CREATE ROLE op1 IN ROLE safe_upgrade_operator");
  c.Scalar(
      "INSERT INTO safe_upgrade.health_checks (name, check_sql, extname, created_by) VALUES "
      "('resets_role', 'SELECT set_config(''role'', ''none'', true) IS NOT NULL AND (SELECT rolsuper FROM "
      "pg_roles WHERE rolname = current_user)', 'su_fixture_counter', 'op1') RETURNING id");
  auto verify = ApplyThenVerify(c, "su_fixture_counter");
  ASSERT_EQ(verify.state, "failed") << verify.EventText();
  EXPECT_EQ(verify.result["checks_failed"], true) << verify.result.dump(2);
  EXPECT_NE(verify.error.find("cannot set parameter \"role\" within security-definer function"),
            std::string::npos)
      << verify.error;
}

}  // namespace
}  // namespace safe_upgrade::testing
