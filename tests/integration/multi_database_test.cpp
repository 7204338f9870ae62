// Upgrades of an extension that lives in application databases, not in the control database
// where safe_upgrade is: one `safe-upgrade run` from the control database covers every database
// that has the extension (or those named with --database) under one snapshot and one restore
// point, and a failure in any database rolls the whole cluster back with one point-in-time
// recovery.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_helpers.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// Scalar in another database of the cluster.
std::string ScalarIn(const TestCluster& c, const std::string& datname, const std::string& sql) {
  auto r = c.Connect(datname)->Exec(sql);
  return r.Empty() || !r.rows[0][0] ? "" : *r.rows[0][0];
}

std::string VersionIn(const TestCluster& c, const std::string& datname, const std::string& extname) {
  return ScalarIn(c, datname, "SELECT extversion FROM pg_extension WHERE extname = '" + extname + "'");
}

// Databases app1 and app2 with the extension at `version` and a marker table; the control
// database (postgres) does not have the extension.
void CreateAppDatabases(const TestCluster& c, const std::string& extname, const std::string& version) {
  for (const char* db : {"app1", "app2"}) {
    c.Exec(std::string("CREATE DATABASE ") + db);
    c.Connect(db)->ExecScript("CREATE EXTENSION " + extname + " VERSION '" + version +
                              "';"
                              "CREATE TABLE marks (label text PRIMARY KEY);"
                              "INSERT INTO marks VALUES ('before begin');");
  }
  ASSERT_EQ(c.Scalar("SELECT count(*) FROM pg_extension WHERE extname = $1", {extname}), "0");
}

json Status(const TestCluster& c, int64_t id) {
  return json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}));
}

std::map<std::string, std::string> Outcomes(const json& status) {
  std::map<std::string, std::string> out;
  for (const auto& d : status["databases"]) out[d.value("datname", "")] = d.value("outcome", "");
  return out;
}

TEST(MultiDatabase, plan_lists_every_database_that_has_the_extension_with_its_version) {
  TestCluster c;
  CreateAppDatabases(c, "hstore", "1.4");
  c.Connect("app2")->ExecScript("ALTER EXTENSION hstore UPDATE TO '1.6'");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  ASSERT_EQ(plan["databases"].size(), 2u) << plan.dump(2);
  EXPECT_EQ(plan["databases"][0].value("datname", ""), "app1");
  EXPECT_EQ(plan["databases"][0].value("installed_version", ""), "1.4");
  EXPECT_EQ(plan["databases"][1].value("datname", ""), "app2");
  EXPECT_EQ(plan["databases"][1].value("installed_version", ""), "1.6");
  EXPECT_TRUE(plan["installed_version"].is_null()) << "the databases disagree, so there is no single version";
  json untouched = plan["rollback"]["databases_rewound_but_not_upgraded"];
  EXPECT_NE(std::find(untouched.begin(), untouched.end(), "postgres"), untouched.end()) << plan.dump(2);

  c.Connect("app1")->ExecScript("ALTER EXTENSION hstore UPDATE TO '1.8'");
  plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  ASSERT_EQ(plan["databases"].size(), 1u) << plan.dump(2);
  bool skipped_at_target = false;
  for (const auto& s : plan["skipped_databases"])
    if (s.value("datname", "") == "app1" && s.value("reason", "") == "already at version 1.8")
      skipped_at_target = true;
  EXPECT_TRUE(skipped_at_target) << plan.dump(2);
}

TEST(MultiDatabase, one_run_from_the_control_database_upgrades_every_database_that_has_the_extension) {
  TestCluster c;
  CreateAppDatabases(c, "hstore", "1.4");
  auto r = Cli(c, {"run", "hstore", "1.8", "--approve"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("in databases app1, app2"), std::string::npos) << r.out;
  EXPECT_EQ(VersionIn(c, "app1", "hstore"), "1.8");
  EXPECT_EQ(VersionIn(c, "app2", "hstore"), "1.8");
  int64_t id = LatestUpgradeId(c);
  json status = Status(c, id);
  EXPECT_EQ(status.value("state", ""), "succeeded");
  EXPECT_EQ(Outcomes(status),
            (std::map<std::string, std::string>{{"app1", "verified"}, {"app2", "verified"}}))
      << status["databases"].dump(2);
  for (const auto& d : status["databases"]) {
    EXPECT_FALSE(d["report"]["dry_run"]["hops"].empty()) << d.dump(2);
    EXPECT_TRUE(d["report"]["apply"].value("committed", false)) << d.dump(2);
    EXPECT_FALSE(d["report"]["verify"]["checks"].empty()) << d.dump(2);
  }
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(id)}),
            "1");
}

TEST(MultiDatabase, database_option_restricts_the_upgrade_to_the_named_databases) {
  TestCluster c;
  CreateAppDatabases(c, "hstore", "1.4");
  auto r = Cli(c, {"run", "hstore", "1.8", "--approve", "--database", "app2"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(VersionIn(c, "app1", "hstore"), "1.4");
  EXPECT_EQ(VersionIn(c, "app2", "hstore"), "1.8");
  json status = Status(c, LatestUpgradeId(c));
  EXPECT_EQ(Outcomes(status), (std::map<std::string, std::string>{{"app2", "verified"}}));

  auto unknown = Cli(c, {"run", "hstore", "1.8", "--approve", "--database", "no_such_db"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
  EXPECT_NE(unknown.err.find("database \"no_such_db\" does not exist"), std::string::npos) << unknown.err;
  auto without = Cli(c, {"run", "hstore", "1.8", "--approve", "--database", "postgres"});
  EXPECT_EQ(without.exit_code, 1) << without.out << without.err;
  EXPECT_NE(without.err.find("not installed in database postgres"), std::string::npos) << without.err;
}

// The upgrade commits in app1, then cannot get its locks in app2 (a session there holds the
// extension's table): the cluster is half upgraded, and one point-in-time recovery puts both
// databases back, with every row written before the restore point.
TEST(MultiDatabase, a_failure_in_the_second_database_rolls_both_back_with_one_pitr) {
  TestCluster c;
  RequireExtension(c, "su_rollback_fixture");
  CreateAppDatabases(c, "su_rollback_fixture", "1.0");
  auto blocker = c.Connect("app2");
  blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");

  // Short lock waits and no retries, so that app2 fails fast.
  int64_t id =
      c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"lock_timeout": "300ms", "max_lock_retries": 0})");
  ASSERT_TRUE(c.WaitForState(id, "dry_running", 300s)) << c.Events(id);
  c.Connect("app2")->ExecScript("INSERT INTO marks VALUES ('after the snapshot')");

  EXPECT_EQ(c.WaitForTerminalState(id), "rolled_back") << c.Events(id);
  json status = Status(c, id);
  EXPECT_EQ(VersionIn(c, "app1", "su_rollback_fixture"), "1.0");
  EXPECT_EQ(VersionIn(c, "app2", "su_rollback_fixture"), "1.0");
  EXPECT_EQ(ScalarIn(c, "app1", "SELECT string_agg(label, ',' ORDER BY label) FROM marks"), "before begin");
  EXPECT_EQ(ScalarIn(c, "app2", "SELECT string_agg(label, ',' ORDER BY label) FROM marks"),
            "after the snapshot,before begin");
  EXPECT_EQ(ScalarIn(c, "app1", "SELECT count(*) FROM su_rb_applied"), "0")
      << "app1's committed apply is undone";
  EXPECT_EQ(Outcomes(status),
            (std::map<std::string, std::string>{{"app1", "rolled_back"}, {"app2", "rolled_back"}}));
  std::string events = c.Events(id);
  EXPECT_NE(events.find("committed in app1 (2.0) but not in app2 (1.0)"), std::string::npos) << events;
  // One point-in-time recovery: one new timeline.
  EXPECT_EQ(c.Scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
}

// A user health check that fails only in app2's data: verification fails there after both
// databases committed, and the cluster is rolled back.
TEST(MultiDatabase, a_health_check_failing_in_one_database_rolls_every_database_back) {
  TestCluster c;
  RequireExtension(c, "su_rollback_fixture");
  CreateAppDatabases(c, "su_rollback_fixture", "1.0");
  for (const char* db : {"app1", "app2"})
    c.Connect(db)->ExecScript("CREATE TABLE orders (amount int NOT NULL); INSERT INTO orders VALUES (10);");
  c.Exec(
      "SELECT safe_upgrade.add_health_check('orders_are_valid', 'SELECT bool_and(su_rb_validate(amount)) "
      "FROM orders', "
      "'su_rollback_fixture')");

  Background run({"--dsn", c.ConnInfo(), "run", "su_rollback_fixture", "2.0", "--approve"}, c.root());
  ASSERT_TRUE(WaitUntil([&] { return LatestUpgradeId(c) > 0; }, 60s)) << run.Err();
  int64_t id = LatestUpgradeId(c);
  ASSERT_TRUE(c.WaitForState(id, "dry_running", 300s)) << c.Events(id);
  c.Connect("app2")->ExecScript("INSERT INTO orders VALUES (1500)");  // after the snapshot

  int code = run.Wait();
  EXPECT_EQ(code, 4) << run.Out() << run.Err() << c.Events(id);
  EXPECT_NE(run.Out().find("app2"), std::string::npos) << run.Out();
  json status = Status(c, id);
  EXPECT_EQ(status.value("state", ""), "rolled_back") << c.Events(id);
  EXPECT_EQ(VersionIn(c, "app1", "su_rollback_fixture"), "1.0");
  EXPECT_EQ(VersionIn(c, "app2", "su_rollback_fixture"), "1.0");
  EXPECT_EQ(ScalarIn(c, "app2", "SELECT count(*) FROM orders WHERE amount = 1500"), "1")
      << "written before the restore point, so kept";
  bool app2_failed = false;
  for (const auto& d : status["databases"])
    for (const auto& check : d["report"]["verify"]["checks"])
      if (d.value("datname", "") == "app2" && check.value("name", "") == "orders_are_valid" &&
          !check.value("ok", true))
        app2_failed = true;
  EXPECT_TRUE(app2_failed) << status["databases"].dump(2);
}

}  // namespace
}  // namespace safe_upgrade::testing
