// The SQL surface against real servers with a real agent: plan() on real extensions and the
// objects that depend on them, begin()'s refusals (SQLSTATE and hint) as the worker and the agent
// see the cluster, privileges through real logins, one winner among concurrent begin() calls,
// and wait() refusing inside the transaction that created the upgrade.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "base/config.h"
#include "base/fs_util.h"
#include "pg_errors.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

bool AgentReachable(const TestCluster& c) {
  return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true";
}

// The agent answers within 30 s (its status row says reachable).
bool AgentAnswers(const TestCluster& c) {
  return WaitUntil([&] { return AgentReachable(c); }, std::chrono::seconds(30));
}

// hstore 1.4, the extension every test upgrades; true once the agent answers.
bool InstallHstoreAndWaitForAgent(const TestCluster& c) {
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  return AgentAnswers(c);
}

bool AgentUnreachable(const TestCluster& c) {
  return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "false";
}

// Runs sql and returns the error it raised; fails the test when it succeeds.
std::string Describe(const PgError& e) {
  return e.sqlstate() + " " + e.message() + " | DETAIL: " + e.detail() + " | HINT: " + e.hint();
}

// True when rows (plan()'s "dependents") hold an object of that type and identity.
bool HasDependent(const json& rows, const std::string& type, const std::string& identity) {
  for (const auto& r : rows)
    if (r.value("object_type", "") == type && r.value("object_identity", "") == identity) return true;
  return false;
}

json Plan(const TestCluster& c, const std::string& ext, const std::string& version) {
  return json::parse(c.Scalar("SELECT safe_upgrade.plan($1, $2)::text", {ext, version}));
}

std::string ConnInfoAs(const TestCluster& c, const std::string& user) {
  return safe_upgrade::ConnInfo(c.info().socket_dir, c.info().port, "postgres", user);
}

// Breakage predicted before any copy: plan() reads the update scripts on the path and names the
// user objects that use what a hop drops, in well under a second, taking no snapshot.
TEST(PlanPrediction, a_view_on_a_function_the_next_hop_drops_is_named_in_under_a_second_with_no_snapshot) {
  TestCluster c;
  c.Exec("CREATE EXTENSION su_fixture_dropfn VERSION '1.0'");
  c.Exec("CREATE VIEW answer_view AS SELECT su_dropfn_answer() AS answer");
  auto conn = c.Connect();
  auto started = std::chrono::steady_clock::now();
  json plan = json::parse(conn->Exec("SELECT safe_upgrade.plan('su_fixture_dropfn', '1.1')::text").Scalar());
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_LT(took, std::chrono::seconds(1));
  ASSERT_EQ(plan["predicted_breakage"].size(), 1u) << plan.dump(2);
  const json& b = plan["predicted_breakage"][0];
  EXPECT_EQ(b["message"], "view public.answer_view uses function public.su_dropfn_answer(), which 1.0--1.1 drops");
  EXPECT_EQ(b["statement"], "DROP FUNCTION su_dropfn_answer()");
  EXPECT_EQ(b["datname"], "postgres");
  std::string warnings = plan["warnings"].dump();
  EXPECT_NE(warnings.find("database postgres: view public.answer_view uses function public.su_dropfn_answer()"),
            std::string::npos)
      << warnings;
  // Advice only: the verdict is the prerequisites', and nothing was started or copied.
  EXPECT_EQ(plan["verdict"], "ok") << plan.dump(2);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
  EXPECT_TRUE(std::filesystem::is_empty(c.info().agent_config.snapshot_dir));
  // Without the view, nothing is predicted.
  c.Exec("DROP VIEW answer_view");
  plan = json::parse(conn->Exec("SELECT safe_upgrade.plan('su_fixture_dropfn', '1.1')::text").Scalar());
  EXPECT_TRUE(plan["predicted_breakage"].empty()) << plan.dump(2);
}

TEST(PlanHstore, plan_lists_the_column_gist_index_and_view_that_use_hstore_and_the_full_update_path) {
  TestCluster c;
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE TABLE docs (id int PRIMARY KEY, attrs hstore);"
      "CREATE INDEX docs_attrs_gist ON docs USING gist (attrs);"
      "CREATE VIEW doc_keys AS SELECT id, akeys(attrs) AS keys FROM docs;"
      "CREATE VIEW doc_ids AS SELECT id FROM docs;");
  ASSERT_TRUE(AgentAnswers(c));

  json plan = Plan(c, "hstore", "1.8");
  EXPECT_EQ(plan["installed_version"], "1.4");
  EXPECT_EQ(plan["target_version"], "1.8");
  EXPECT_EQ(plan["update_path"], json::array({"1.4", "1.5", "1.6", "1.7", "1.8"}));
  const json& deps = plan["dependents"];
  EXPECT_TRUE(HasDependent(deps, "table column", "public.docs.attrs")) << deps.dump(2);
  EXPECT_TRUE(HasDependent(deps, "index", "public.docs_attrs_gist")) << deps.dump(2);
  EXPECT_TRUE(HasDependent(deps, "view", "public.doc_keys")) << deps.dump(2);
  EXPECT_FALSE(HasDependent(deps, "view", "public.doc_ids")) << "a view that never touches hstore is not a dependent";
  // The index is there because of its operator class, the view because of its function.
  bool index_via_opclass = false, view_via_function = false;
  for (const auto& r : deps) {
    if (r["object_identity"] == "public.docs_attrs_gist" && r["depends_on_type"] == "operator class")
      index_via_opclass = true;
    if (r["object_identity"] == "public.doc_keys" && r["depends_on_identity"] == "public.akeys(public.hstore)")
      view_via_function = true;
  }
  EXPECT_TRUE(index_via_opclass) << deps.dump(2);
  EXPECT_TRUE(view_via_function) << deps.dump(2);

  // With archiving through the agent and the agent up, nothing blocks.
  EXPECT_EQ(plan["verdict"], "ok") << plan["reasons"].dump(2);
  EXPECT_EQ(plan["pitr"]["agent_reachable"], true);
  EXPECT_EQ(plan["pitr"]["wal_archive_writable"], true);
  EXPECT_EQ(plan["pitr"]["enough_disk"], true);
  EXPECT_GT(plan["pitr"]["snapshot_free_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(plan["pitr"]["archive_mode"], "on");
  // The rollback path begin() would take by default: with room next to the data directory, the
  // parked target, whose disk cost plan names.
  const auto& target = plan["rollback"]["rollback_target"];
  EXPECT_EQ(target["option"], "rollback_target") << target.dump(2);
  EXPECT_EQ(target["default"], "auto");
  EXPECT_EQ(target["auto_would_use"], "ready") << target.dump(2);
  EXPECT_GT(target["data_free_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(target["ready_disk_bytes"], plan["pitr"]["cluster_size_bytes"]);
  EXPECT_NE(plan["rollback"]["cost"].get<std::string>().find("stop, swap and start"), std::string::npos)
      << plan["rollback"].dump(2);
  EXPECT_NE(plan["rollback"]["loses"].get<std::string>().find("after the restore point"), std::string::npos);
  // plan() is read-only.
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
}

TEST(PlanFdw, plan_on_postgres_fdw_lists_its_foreign_server_and_foreign_table) {
  TestCluster c({.start_agent = false});
  auto conn = c.Connect();
  // The oldest packaged version, so that there is something to upgrade to when there are two.
  auto versions = conn->Exec(
      "SELECT version FROM pg_available_extension_versions WHERE name = 'postgres_fdw' "
      "ORDER BY string_to_array(version, '.')::int[]");
  ASSERT_FALSE(versions.Empty()) << "postgres_fdw is not available on this server";
  std::string oldest = *versions.rows.front()[0];
  std::string newest = *versions.rows.back()[0];
  conn->ExecScript("CREATE EXTENSION postgres_fdw VERSION '" + oldest + "';"
                   "CREATE SERVER su_loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'postgres');"
                   "CREATE USER MAPPING FOR postgres SERVER su_loopback;"
                   "CREATE TABLE local_items (id int);"
                   "CREATE FOREIGN TABLE remote_items (id int) SERVER su_loopback OPTIONS (table_name 'local_items');");

  json deps;
  if (oldest != newest) {
    json plan = Plan(c, "postgres_fdw", newest);
    EXPECT_EQ(plan["update_path"].front(), oldest);
    EXPECT_EQ(plan["update_path"].back(), newest);
    deps = plan["dependents"];
    // No agent here: the plan says so and blocks.
    EXPECT_EQ(plan["verdict"], "blocked");
    EXPECT_EQ(plan["pitr"]["agent_reachable"], false);
  } else {
    // Only one version is packaged: plan() would refuse "already at version"; the rows are the same.
    auto r = conn->Exec("SELECT json_agg(d)::text FROM safe_upgrade.dependency_rows('postgres_fdw') d");
    deps = json::parse(*r.rows[0][0]);
  }
  EXPECT_TRUE(HasDependent(deps, "server", "su_loopback")) << deps.dump(2);
  EXPECT_TRUE(HasDependent(deps, "foreign table", "public.remote_items")) << deps.dump(2);
  EXPECT_TRUE(HasDependent(deps, "user mapping", "postgres on server su_loopback")) << deps.dump(2);
  EXPECT_FALSE(HasDependent(deps, "table", "public.local_items")) << deps.dump(2);
}

TEST(BeginErrors, unknown_extension_unknown_version_and_current_version_are_refused_with_sqlstate_and_hint) {
  TestCluster c;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'; CREATE EXTENSION citext;");
  ASSERT_TRUE(AgentAnswers(c));
  auto conn = c.Connect();

  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('no_such_extension', '1.0')");
  EXPECT_EQ(e.sqlstate(), "42704") << Describe(e);
  EXPECT_FALSE(e.hint().empty());
  e = ErrorOf(*conn, "SELECT safe_upgrade.begin('seg', '1.4')");  // available, not installed
  EXPECT_EQ(e.sqlstate(), "42704") << Describe(e);
  EXPECT_NE(e.hint().find("CREATE EXTENSION"), std::string::npos) << Describe(e);
  e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '9.9')");
  EXPECT_EQ(e.sqlstate(), "22023") << Describe(e);
  EXPECT_NE(e.hint().find("1.8"), std::string::npos) << "the hint lists the versions there are: " << Describe(e);
  e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '1.4')");
  EXPECT_EQ(e.sqlstate(), "22023") << Describe(e);
  EXPECT_NE(e.message().find("already at version 1.4"), std::string::npos) << Describe(e);
  e = ErrorOf(*conn, "SELECT safe_upgrade.begin('citext', '1.4')");  // a downgrade: no update path
  EXPECT_EQ(e.sqlstate(), "22023") << Describe(e);
  EXPECT_NE(e.message().find("no update path"), std::string::npos) << Describe(e);
  e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '1.8', '{\"lock_timeout\": \"whenever\"}')");
  EXPECT_EQ(e.sqlstate(), "22023") << Describe(e);
  // plan() raises the same errors.
  e = ErrorOf(*conn, "SELECT safe_upgrade.plan('no_such_extension', '1.0')");
  EXPECT_EQ(e.sqlstate(), "42704") << Describe(e);
  e = ErrorOf(*conn, "SELECT safe_upgrade.plan('hstore', '9.9')");
  EXPECT_EQ(e.sqlstate(), "22023") << Describe(e);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");

  // In a database the scheduler does not serve, nothing would ever act on the upgrade.
  c.Exec("CREATE DATABASE elsewhere");
  PgConn elsewhere(c.ConnInfo("elsewhere"));
  elsewhere.ExecScript("CREATE EXTENSION safe_upgrade; CREATE EXTENSION hstore VERSION '1.4';");
  e = ErrorOf(elsewhere, "SELECT safe_upgrade.begin('hstore', '1.8')");
  EXPECT_EQ(e.sqlstate(), "55000") << Describe(e);
  EXPECT_NE(e.detail().find("scheduler runs in database \"postgres\""), std::string::npos) << Describe(e);
  EXPECT_NE(e.hint().find("safe_upgrade.database"), std::string::npos) << Describe(e);
}

// begin() of hstore 1.8 is refused with 55000, its detail and hint saying why, and queues nothing.
void ExpectBeginRefusedWith55000(const TestCluster& c, const std::string& detail_part,
                                 const std::string& hint_part) {
  auto conn = c.Connect();
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '1.8')");
  EXPECT_EQ(e.sqlstate(), "55000") << Describe(e);
  EXPECT_NE(e.detail().find(detail_part), std::string::npos) << Describe(e);
  EXPECT_NE(e.hint().find(hint_part), std::string::npos) << Describe(e);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
}

TEST(BeginPitr, begin_on_a_cluster_with_archive_mode_off_is_refused_with_55000) {
  TestCluster c({.settings = {{"archive_mode", "off"}}});
  ASSERT_TRUE(InstallHstoreAndWaitForAgent(c));
  ExpectBeginRefusedWith55000(c, "archive_mode is off", "archive_mode = on");
  json plan = Plan(c, "hstore", "1.8");
  EXPECT_EQ(plan["verdict"], "blocked");
  EXPECT_EQ(plan["reasons"].size(), 1u) << plan["reasons"].dump(2);
}

TEST(BeginPitr, begin_while_the_agent_is_stopped_is_refused_with_55000_and_works_once_it_is_back) {
  TestCluster c({.settings = {{"safe_upgrade.agent_check_interval", "'200ms'"}, {"safe_upgrade.enabled", "off"}}});
  ASSERT_TRUE(InstallHstoreAndWaitForAgent(c));
  c.StopAgent();
  ASSERT_TRUE(WaitUntil([&] { return AgentUnreachable(c); }, 30s));
  ExpectBeginRefusedWith55000(c, "agent is unreachable", "safe-upgrade-agent");

  c.StartAgent();
  ASSERT_TRUE(AgentAnswers(c));
  EXPECT_GT(std::stoll(c.Scalar("SELECT safe_upgrade.begin('hstore', '1.8')")), 0);
}

TEST(BeginPitr, begin_without_enough_free_disk_for_the_snapshot_is_refused_with_55000) {
  TestCluster c({.settings = {{"safe_upgrade.agent_check_interval", "'200ms'"}, {"safe_upgrade.enabled", "off"}}});
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  // A reserve larger than any disk: the agent reports it in every ping.
  AgentConfig config = c.info().agent_config;
  config.disk_reserve_mb = uint64_t{1} << 40;
  c.StopAgent();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(config), 0644);
  c.StartAgent();
  ASSERT_TRUE(WaitUntil(
      [&] {
        return c.Scalar("SELECT (reachable AND disk_reserve_bytes > 1000000000000000)::text "
                        "FROM safe_upgrade.agent_status()") == "true";
      },
      30s))
      << c.AgentLog();
  auto conn = c.Connect();
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('hstore', '1.8')");
  EXPECT_EQ(e.sqlstate(), "55000") << Describe(e);
  EXPECT_NE(e.detail().find("not enough free disk"), std::string::npos) << Describe(e);
  EXPECT_NE(e.hint().find("disk_reserve_mb"), std::string::npos) << Describe(e);
  EXPECT_EQ(Plan(c, "hstore", "1.8")["pitr"]["enough_disk"], false);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");
}

TEST(BeginPrivileges, a_role_outside_safe_upgrade_operator_gets_42501_and_an_operator_can_begin) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE TABLE docs (id int, attrs hstore);"
      "CREATE ROLE su_nobody LOGIN;"
      "CREATE ROLE su_op LOGIN IN ROLE safe_upgrade_operator;");
  ASSERT_TRUE(AgentAnswers(c));

  PgConn nobody(ConnInfoAs(c, "su_nobody"));
  for (const char* sql : {"SELECT safe_upgrade.begin('hstore', '1.8')", "SELECT safe_upgrade.cancel(1)",
                          "SELECT safe_upgrade.approve(1)", "SELECT safe_upgrade.rollback(1)",
                          "SELECT safe_upgrade.add_health_check('x', 'SELECT true')",
                          "UPDATE safe_upgrade.upgrades SET state = 'cancelled'",
                          "DELETE FROM safe_upgrade.events"}) {
    PgError e = ErrorOf(nobody, sql);
    EXPECT_EQ(e.sqlstate(), "42501") << sql << ": " << Describe(e);
  }
  // Reading stays open to everyone.
  EXPECT_EQ(json::parse(nobody.Exec("SELECT safe_upgrade.plan('hstore', '1.8')::text").Scalar())["verdict"], "ok");

  PgConn op(ConnInfoAs(c, "su_op"));
  std::string id = op.Exec("SELECT safe_upgrade.begin('hstore', '1.8', '{\"require_approval\": true}')").Scalar();
  EXPECT_EQ(c.Scalar("SELECT created_by || ' ' || state || ' ' || from_version || ' ' || to_version || ' ' || "
                     "array_to_string(update_path, ',') FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                     {id}),
            "su_op queued 1.4 1.8 1.4,1.5,1.6,1.7,1.8");
  // The options are stored with every default filled in.
  json options = json::parse(c.Scalar("SELECT options::text FROM safe_upgrade.upgrades WHERE id = $1::bigint", {id}));
  EXPECT_EQ(options["require_approval"], true);
  EXPECT_EQ(options["auto_rollback"], true);
  EXPECT_EQ(options["dry_run_only"], false);
  EXPECT_EQ(options["lock_timeout"], "2000ms");
  EXPECT_EQ(options["max_lock_retries"], 5);
  EXPECT_TRUE(options.contains("not_before"));
  EXPECT_EQ(c.Scalar("SELECT phase FROM safe_upgrade.events WHERE upgrade_id = $1::bigint", {id}), "queued");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.dependency_snapshots WHERE upgrade_id = $1::bigint "
                     "AND phase = 'before' AND object_identity = 'public.docs.attrs'",
                     {id}),
            "1");
  // The operator acts through the API, never on the tables.
  EXPECT_EQ(op.Exec("SELECT safe_upgrade.approve($1::bigint)", {id}).Scalar(), "queued");
  PgError e = ErrorOf(op, "UPDATE safe_upgrade.upgrades SET state = 'succeeded' WHERE id = $1::bigint", {id});
  EXPECT_EQ(e.sqlstate(), "42501") << Describe(e);
  EXPECT_EQ(op.Exec("SELECT safe_upgrade.cancel($1::bigint)", {id}).Scalar(), "queued");
}

TEST(BeginConcurrency, twenty_concurrent_begins_give_exactly_one_upgrade_and_nineteen_55006) {
  // The scheduler is off, so the winner stays queued (in flight) while the others race it.
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  ASSERT_TRUE(InstallHstoreAndWaitForAgent(c));

  // A SHARE lock on the table lets every begin() pass its "already in flight?" check (nothing is
  // committed yet) and then holds all twenty at their INSERT, so that they really do meet at the
  // unique index instead of arriving one after another.
  auto blocker = c.Connect();
  blocker->ExecScript("BEGIN; LOCK TABLE safe_upgrade.upgrades IN SHARE MODE;");
  constexpr int kSessions = 20;
  std::vector<std::unique_ptr<PgConn>> conns;
  for (int i = 0; i < kSessions; ++i) conns.push_back(c.Connect());
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  int ready = 0;
  std::vector<std::string> ids, sqlstates, hints, others;
  std::vector<std::thread> threads;
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back([&, i] {
      {
        std::unique_lock<std::mutex> lock(mu);
        ++ready;
        cv.notify_all();
        cv.wait(lock, [&] { return go; });
      }
      try {
        std::string id = conns[i]->Exec("SELECT safe_upgrade.begin('hstore', '1.8')").Scalar();
        std::lock_guard<std::mutex> lock(mu);
        ids.push_back(id);
      } catch (const PgError& e) {
        std::lock_guard<std::mutex> lock(mu);
        sqlstates.push_back(e.sqlstate());
        hints.push_back(e.hint());
        if (e.sqlstate() != "55006") others.push_back(Describe(e));
      }
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return ready == kSessions; });
    go = true;
  }
  cv.notify_all();
  bool all_waiting = WaitUntil(
      [&] {
        return c.Scalar("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted "
                        "AND relation = 'safe_upgrade.upgrades'::regclass") == std::to_string(kSessions);
      },
      60s);
  blocker->ExecScript("COMMIT");
  for (auto& t : threads) t.join();
  EXPECT_TRUE(all_waiting) << "the sessions never all waited at the INSERT";

  ASSERT_EQ(ids.size(), 1u) << "winners: " << ids.size();
  EXPECT_EQ(sqlstates.size(), static_cast<size_t>(kSessions - 1));
  EXPECT_TRUE(others.empty()) << others.front();
  // They lost at the unique index, not at the check before it, and were told what to do.
  for (const auto& h : hints) EXPECT_NE(h.find("at the same moment"), std::string::npos) << h;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "1");
  EXPECT_EQ(c.Scalar("SELECT id::text FROM safe_upgrade.upgrades"), ids[0]);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.events"), "1");
  EXPECT_EQ(c.Scalar("SELECT state FROM safe_upgrade.upgrades"), "queued");
}

TEST(SqlWait, wait_refuses_inside_the_transaction_that_created_the_upgrade_and_follows_it_after_commit) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  ASSERT_TRUE(InstallHstoreAndWaitForAgent(c));
  auto conn = c.Connect();
  conn->ExecScript("BEGIN");
  std::string id = conn->Exec("SELECT safe_upgrade.begin('hstore', '1.8')").Scalar();
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.wait($1::bigint, '5 seconds')", {id});
  EXPECT_EQ(e.sqlstate(), "25001") << Describe(e);
  EXPECT_NE(e.hint().find("COMMIT after begin()"), std::string::npos) << Describe(e);
  conn->ExecScript("ROLLBACK");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades"), "0");

  conn->ExecScript("BEGIN");
  id = conn->Exec("SELECT safe_upgrade.begin('hstore', '1.8')").Scalar();
  conn->ExecScript("COMMIT");
  // The scheduler is off, so the upgrade stays queued: wait() times out with the current state.
  EXPECT_EQ(conn->Exec("SELECT safe_upgrade.wait($1::bigint, '300 milliseconds')", {id}).Scalar(), "queued");
  // Under REPEATABLE READ it would never see progress.
  conn->ExecScript("BEGIN ISOLATION LEVEL REPEATABLE READ");
  e = ErrorOf(*conn, "SELECT safe_upgrade.wait($1::bigint)", {id});
  EXPECT_EQ(e.sqlstate(), "25001") << Describe(e);
  conn->ExecScript("ROLLBACK");
  // Another session finishes it; wait() sees that commit while it polls.
  std::thread finisher([&] {
    // Once wait() is polling, as the worker would.
    WaitUntil(
        [&] {
          return c.Scalar("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                          "AND query LIKE 'SELECT safe_upgrade.wait(%'") == "1";
        },
        30s);
    c.Exec("UPDATE safe_upgrade.upgrades SET state = 'cancelled' WHERE id = " + id);
  });
  EXPECT_EQ(conn->Exec("SELECT safe_upgrade.wait($1::bigint, '60 seconds')", {id}).Scalar(), "cancelled");
  finisher.join();
}

TEST(AgentStatus, data_directory_is_shown_only_to_roles_that_may_read_the_servers_settings) {
  TestCluster c;
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true"; }, 60s));
  c.Exec(
      "CREATE ROLE su_status_reader LOGIN; CREATE ROLE su_settings_reader LOGIN IN ROLE "
      "pg_read_all_settings");
  EXPECT_EQ(c.Scalar("SELECT data_directory FROM safe_upgrade.agent_status()"), c.info().data_dir);
  auto as = [&](const std::string& role) {
    auto conn = c.Connect();
    conn->Exec("SELECT pg_catalog.set_config('role', $1, false)", {role});
    return conn
        ->Exec(
            "SELECT coalesce(data_directory, '(hidden)') || ' ' || reachable::text "
            "FROM safe_upgrade.agent_status()")
        .Scalar();
  };
  EXPECT_EQ(as("su_status_reader"), "(hidden) true");
  EXPECT_EQ(as("su_settings_reader"), c.info().data_dir + " true");
}

}  // namespace
}  // namespace safe_upgrade::testing
