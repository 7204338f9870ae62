// Extension families: an upgrade of an extension takes along the installed extensions that require
// it (PostGIS's postgis_raster and postgis_topology) when they are at its version and have a path
// to the same target, in the same transaction, on the dry-run clone and on production; plan()
// lists them and warns about those it leaves behind. Real PostGIS 3.3.2 -> 3.3.2next (Debian's
// postgresql-15-postgis-3), driven by the background worker and the agent.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "agent_job_helpers.h"
#include "checks/extension_checks.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

bool PostgisAvailable(const TestCluster& c) {
  auto conn = c.Connect();
  return ExtensionAvailable(*conn, "postgis") && ExtensionAvailable(*conn, "postgis_raster") &&
         ExtensionAvailable(*conn, "postgis_topology");
}

std::string ScalarIn(const TestCluster& c, const std::string& datname, const std::string& sql) {
  auto r = c.Connect(datname)->Exec(sql);
  return r.Empty() || !r.rows[0][0] ? "" : *r.rows[0][0];
}

std::string VersionIn(const TestCluster& c, const std::string& datname, const std::string& extname) {
  return ScalarIn(c, datname, "SELECT extversion FROM pg_extension WHERE extname = '" + extname + "'");
}

// postgis with raster and topology in database app, a table of points with a GiST index.
void CreatePostgisFamily(const TestCluster& c, const std::string& topology_version = "3.3.2") {
  c.Exec("CREATE DATABASE app");
  c.Connect("app")->ExecScript(
      "CREATE EXTENSION postgis VERSION '3.3.2';"
      "CREATE EXTENSION postgis_raster VERSION '3.3.2';"
      "CREATE EXTENSION postgis_topology VERSION '" +
      topology_version +
      "';"
      "CREATE TABLE places (id int PRIMARY KEY, geom geometry(Point, 4326) NOT NULL);"
      "INSERT INTO places SELECT i, ST_SetSRID(ST_MakePoint(i % 180, i % 90), 4326) "
      "  FROM generate_series(1, 5000) i;"
      "CREATE INDEX places_gix ON places USING gist (geom);"
      "ANALYZE places;");
}

const json* DatabaseOf(const json& plan, const std::string& datname) {
  for (const auto& d : plan["databases"])
    if (d.value("datname", "") == datname) return &d;
  return nullptr;
}

std::set<std::string> FamilyNames(const json& family) {
  std::set<std::string> out;
  for (const auto& m : family) out.insert(m.value("extname", ""));
  return out;
}

json Status(const TestCluster& c, int64_t id) {
  return json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}));
}

TEST(Family, postgis_upgrade_takes_raster_and_topology_along_in_one_transaction_on_clone_and_production) {
  TestCluster c;
  if (!PostgisAvailable(c)) GTEST_SKIP() << "postgis is not installed (postgresql-15-postgis-3)";
  CreatePostgisFamily(c);

  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('postgis', '3.3.2next')::text"));
  const json* app = DatabaseOf(plan, "app");
  ASSERT_NE(app, nullptr) << plan.dump(2);
  EXPECT_EQ(FamilyNames((*app)["family"]), (std::set<std::string>{"postgis_raster", "postgis_topology"}))
      << app->dump(2);
  for (const auto& m : (*app)["family"]) {
    EXPECT_EQ(m.value("from_version", ""), "3.3.2") << m.dump();
    EXPECT_EQ(m["update_path"], json::array({"3.3.2", "3.3.2next"})) << m.dump();
  }
  for (const auto& w : plan["warnings"])
    EXPECT_EQ(w.get<std::string>().find("is not upgraded with it"), std::string::npos)
        << plan["warnings"].dump(2);

  int64_t id = c.BeginUpgrade("postgis", "3.3.2next");
  EXPECT_EQ(c.WaitForTerminalState(id, 600s), "succeeded") << c.Events(id);

  for (const char* ext : {"postgis", "postgis_raster", "postgis_topology"})
    EXPECT_EQ(VersionIn(c, "app", ext), "3.3.2next") << ext;
  std::string full = ScalarIn(c, "app", "SELECT postgis_full_version()");
  EXPECT_EQ(full.find("need upgrade"), std::string::npos) << full;
  EXPECT_NE(full.find("RASTER"), std::string::npos) << full;
  EXPECT_NE(full.find("TOPOLOGY"), std::string::npos) << full;
  EXPECT_EQ(ScalarIn(c, "app", "SELECT count(*) FROM places"), "5000");
  EXPECT_EQ(ScalarIn(c, "app", "SELECT indisvalid FROM pg_index WHERE indexrelid = 'places_gix'::regclass"),
            "t");
  auto conn = c.Connect("app");
  conn->ExecScript("SET enable_seqscan = off");
  std::string explain;
  for (const auto& row :
       conn->Exec("EXPLAIN SELECT count(*) FROM places WHERE geom && ST_MakeEnvelope(0, 0, 10, 10, 4326)")
           .rows)
    explain += row[0].value_or("") + "\n";
  EXPECT_NE(explain.find("places_gix"), std::string::npos) << explain;
  const std::string in_box = "SELECT count(*) FROM places WHERE geom && ST_MakeEnvelope(0, 0, 10, 10, 4326)";
  std::string through_index = conn->Exec(in_box).Scalar();
  conn->ExecScript("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_seqscan = on");
  EXPECT_EQ(through_index, conn->Exec(in_box).Scalar()) << "the index finds what a scan of the table finds";
  EXPECT_NE(through_index, "0");

  // begin() recorded the family; every phase ran it and checked it.
  json status = Status(c, id);
  ASSERT_EQ(status["databases"].size(), 1u) << status["databases"].dump(2);
  const json& db = status["databases"][0];
  EXPECT_EQ(FamilyNames(db["family"]), (std::set<std::string>{"postgis_raster", "postgis_topology"}));
  for (const char* phase : {"dry_run", "apply"}) {
    std::set<std::string> hopped;
    for (const auto& h : db["report"][phase]["hops"]) hopped.insert(h.value("extname", ""));
    EXPECT_EQ(hopped, (std::set<std::string>{"postgis", "postgis_raster", "postgis_topology"}))
        << phase << ": " << db["report"][phase].dump(2);
  }
  std::set<std::string> checks;
  for (const auto& ch : db["report"]["verify"]["checks"]) {
    checks.insert(ch.value("name", ""));
    EXPECT_TRUE(ch.value("ok", false)) << ch.dump();
  }
  for (const char* name : {"extension_version", "extension_version of postgis_raster",
                           "extension_version of postgis_topology", "postgis_full_version"})
    EXPECT_TRUE(checks.count(name)) << name << " missing from " << db["report"]["verify"].dump(2);
  std::string events = c.Events(id);
  EXPECT_NE(
      events.find("postgis upgraded to 3.3.2next in database app with postgis_raster, postgis_topology"),
      std::string::npos)
      << events;
}

TEST(Family, a_dependent_at_another_version_is_not_taken_along_and_plan_warns_about_it) {
  TestCluster c;
  if (!PostgisAvailable(c)) GTEST_SKIP() << "postgis is not installed (postgresql-15-postgis-3)";
  CreatePostgisFamily(c, "3.3.2next");  // topology ahead of postgis

  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('postgis', '3.3.2next')::text"));
  const json* app = DatabaseOf(plan, "app");
  ASSERT_NE(app, nullptr) << plan.dump(2);
  EXPECT_EQ(FamilyNames((*app)["family"]), (std::set<std::string>{"postgis_raster"})) << app->dump(2);
  EXPECT_EQ(plan.value("verdict", ""), "ok") << plan.dump(2);
  std::string warnings = plan["warnings"].dump();
  EXPECT_NE(
      warnings.find("database app: postgis_topology requires postgis but is not upgraded with it: it is at "
                    "version 3.3.2next, not 3.3.2 like postgis"),
      std::string::npos)
      << warnings;
  EXPECT_EQ(plan["warnings"].size(), plan["warning_hints"].size());

  int64_t id = c.BeginUpgrade("postgis", "3.3.2next", R"({"dry_run_only": true})");
  json family =
      json::parse(c.Scalar("SELECT family::text FROM safe_upgrade.upgrade_databases WHERE upgrade_id = "
                           "$1::bigint AND datname = 'app'",
                           {std::to_string(id)}));
  EXPECT_EQ(FamilyNames(family), (std::set<std::string>{"postgis_raster"})) << family.dump();
  EXPECT_EQ(c.WaitForTerminalState(id, 600s), "validated") << c.Events(id);
  for (const char* ext : {"postgis", "postgis_raster"}) EXPECT_EQ(VersionIn(c, "app", ext), "3.3.2") << ext;
  EXPECT_EQ(VersionIn(c, "app", "postgis_topology"), "3.3.2next");
}

// The built-in PostGIS check of verification: postgis_full_version() does not notice raster left
// at 3.3.2 beside a postgis at 3.3.2next (one release of the scripts), so the check compares the
// extensions' versions too.
TEST(Family, postgis_check_fails_when_raster_or_topology_is_left_behind) {
  TestCluster c(ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}, .start_agent = false});
  if (!PostgisAvailable(c)) GTEST_SKIP() << "postgis is not installed (postgresql-15-postgis-3)";
  CreatePostgisFamily(c);
  auto conn = c.Connect("app");
  const std::vector<std::string> family = {"postgis_raster", "postgis_topology"};
  auto together = CheckPostgis(*conn, "postgis", family);
  ASSERT_TRUE(together.has_value());
  EXPECT_TRUE(together->ok) << together->message;

  conn->ExecScript("ALTER EXTENSION postgis UPDATE TO '3.3.2next'");
  auto behind = CheckPostgis(*conn, "postgis", family);
  ASSERT_TRUE(behind.has_value());
  EXPECT_FALSE(behind->ok) << behind->message;
  EXPECT_NE(behind->message.find("need upgrade: postgis_raster at 3.3.2, postgis_topology at 3.3.2"),
            std::string::npos)
      << behind->message;
  // Members that were not to move with it (plan() warned about them) do not fail it.
  auto warned = CheckPostgis(*conn, "postgis", {});
  ASSERT_TRUE(warned.has_value());
  EXPECT_TRUE(warned->ok) << warned->message;
}

// One transaction for the extension and its family on production: the member's failing hop
// undoes the hop of the extension it requires, and the failure names the member.
TEST(Family, a_failing_member_hop_rolls_back_the_whole_family_and_is_named) {
  TestCluster c(ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}});
  {
    auto conn = c.Connect();
    if (!ExtensionAvailable(*conn, "su_fixture_famfail")) GTEST_SKIP() << "run make check-install first";
  }
  c.Exec("CREATE EXTENSION su_fixture_counter");
  c.Exec("CREATE EXTENSION su_fixture_famfail");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('su_fixture_counter', '1.1')::text"));
  ASSERT_EQ(plan["databases"].size(), 1u) << plan.dump(2);
  ASSERT_EQ(plan["databases"][0]["family"],
            json::parse(R"([{"extname": "su_fixture_famfail", "from_version": "1.0",
                            "update_path": ["1.0", "1.1"]}])"))
      << plan.dump(2);

  int64_t id = ReadyToApply(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"});
  c.Scalar(
      "UPDATE safe_upgrade.upgrade_databases SET family = $2::jsonb WHERE upgrade_id = $1::bigint "
      "RETURNING datname",
      {std::to_string(id), plan["databases"][0]["family"].dump()});
  auto job = RunAgentJob(c, JobKind::kApply, id, 120s);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("hop 1.0 -> 1.1 of su_fixture_famfail failed"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("production is unchanged"), std::string::npos) << job.error;
  EXPECT_NE(job.EventText().find("with su_fixture_famfail"), std::string::npos) << job.EventText();
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_counter'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_famfail'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_counter_runs"), "0") << "counter's hop ran, then rolled back";
  EXPECT_EQ(c.Scalar("SELECT last_value FROM su_counter_attempts"), "1") << "counter's hop ran once";
}

// A member's own data counts like the extension's: su_fixture_famdata (which requires
// su_fixture_counter) empties its pg_extension_config_dump table in its update, so the dry run of
// an upgrade of counter that takes it along is blocked and names that table; production keeps
// its rows and both versions.
TEST(Family, a_member_that_loses_its_config_table_rows_blocks_the_upgrade) {
  TestCluster c;
  if (!ExtensionAvailable(*c.Connect(), "su_fixture_famdata")) GTEST_SKIP() << "run make check-install first";
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  c.Exec("CREATE EXTENSION su_fixture_famdata VERSION '1.0'");
  c.Exec("INSERT INTO su_famdata_rules (rule) VALUES ('a'), ('b')");
  int64_t id = c.BeginUpgrade("su_fixture_counter", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(id), "blocked") << c.Events(id);
  std::string error = c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("loses rows of su_fixture_famdata's own data"), std::string::npos) << error;
  EXPECT_NE(error.find("su_famdata_rules: 2 row(s) before the upgrade, 0 after"), std::string::npos) << error;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_famdata_rules"), "2");
  EXPECT_EQ(c.Scalar("SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension "
                     "WHERE extname LIKE 'su_fixture_%'"),
            "su_fixture_counter 1.0, su_fixture_famdata 1.0");
}

}  // namespace
}  // namespace safe_upgrade::testing
