// Dry runs on clones of the snapshot: real upgrades (hstore, PostGIS) validate; broken ones
// (dropped function under a view, a failing user check, a failing middle hop, an erroring or slow
// check) block with a reason that names the culprit; the clone is isolated from production and
// always torn down, even after the agent crashed mid-dry-run.
//
// The tests drive the agent directly (the scheduler is off): they insert the upgrade row, run the
// snapshot job, then the dry-run job.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

ClusterOptions SchedulerOff() { return ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}}; }

bool Available(const TestCluster& c, const std::string& ext) {
  auto conn = c.Connect();
  return ExtensionAvailable(*conn, ext);
}

void AddCheck(const TestCluster& c, const std::string& name, const std::string& sql,
              const std::string& extname, const std::string& timeout = "30 seconds") {
  c.Scalar(
      "INSERT INTO safe_upgrade.health_checks (name, check_sql, extname, timeout) "
      "VALUES ($1, $2, $3, $4::interval) RETURNING id",
      {name, sql, extname, timeout});
}

struct Check {
  std::string name, sql, extname, timeout = "30 seconds";
};
void AddChecks(const TestCluster& c, const std::vector<Check>& checks) {
  for (const auto& check : checks) AddCheck(c, check.name, check.sql, check.extname, check.timeout);
}

FinishedJob DryRun(const TestCluster& c, int64_t id) {
  SetState(c, id, "dry_running");
  return RunAgentJob(c, JobKind::kDryRun, id);
}

// A queued upgrade of extname from 1.0 to 1.1 (one hop), with its snapshot taken.
int64_t SnapshottedUpgrade(const TestCluster& c, const std::string& extname) {
  int64_t id = InsertUpgrade(c, extname, "1.0", "1.1", {"1.0", "1.1"}, "queued");
  TakeSnapshot(c, id);
  return id;
}

std::string CloneDir(const TestCluster& c, int64_t id) {
  return JoinPath(c.info().agent_config.ClonesDir(), "dryrun-" + std::to_string(id));
}

const json* FindCheck(const json& result, const std::string& name) {
  if (!result.contains("checks")) return nullptr;
  for (const auto& ch : result.at("checks"))
    if (ch.value("name", "") == name) return &ch;
  return nullptr;
}

// The dependency rows after the upgrade, in the (only) database of the upgrade.
const json& DependencyAfter(const json& result) {
  return result.at("databases").at(0).at("dependency_after");
}

bool HasDependency(const json& rows, const std::string& type, const std::string& identity_part) {
  for (const auto& r : rows)
    if (r.value("object_type", "") == type &&
        r.value("object_identity", "").find(identity_part) != std::string::npos)
      return true;
  return false;
}

// Production's 'before' rows, as begin() records them, when the installed catalog can compute them.
void RecordBeforeRows(const TestCluster& c, int64_t id, const std::string& extname) {
  if (c.Scalar("SELECT to_regprocedure('safe_upgrade.dependency_rows(name)') IS NOT NULL") != "t") return;
  c.Scalar(
      "WITH ins AS (INSERT INTO safe_upgrade.dependency_snapshots (upgrade_id, phase, object_type, "
      "object_schema, "
      "object_identity, depends_on_type, depends_on_identity, deptype) "
      "SELECT $1::bigint, 'before', r.* FROM safe_upgrade.dependency_rows($2) r RETURNING 1) "
      "SELECT count(*) FROM ins",
      {std::to_string(id), extname});
}

TEST(DryRun, hstore_1_4_to_1_8_with_data_and_gist_index_validates_hop_by_hop) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  c.Exec("CREATE TABLE items (id int PRIMARY KEY, h hstore)");
  c.Exec(
      "INSERT INTO items SELECT i, hstore('k', 'v' || i) || hstore('n', i::text) FROM generate_series(1, "
      "20000) i");
  c.Exec("CREATE INDEX items_h_gist ON items USING gist (h)");
  c.Exec("CREATE VIEW item_keys AS SELECT id, akeys(h) AS keys FROM items");
  c.Exec("ANALYZE items");
  AddCheck(c, "hstore_containment_finds_one_row", "SELECT count(*) = 1 FROM items WHERE h @> 'k=>v4242'",
           "hstore");
  AddCheck(c, "hstore_view_reads", "SELECT count(*) = 20000 FROM item_keys WHERE keys @> ARRAY['k']",
           "hstore");
  int64_t id = InsertUpgrade(c, "hstore", "1.4", "1.8", {"1.4", "1.5", "1.6", "1.7", "1.8"}, "queued");
  TakeSnapshot(c, id);

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  const json& r = job.result;
  ASSERT_EQ(r["hops"].size(), 4u) << r.dump(2);
  std::vector<std::string> expected = {"1.4", "1.5", "1.6", "1.7", "1.8"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(r["hops"][i]["from"], expected[i]);
    EXPECT_EQ(r["hops"][i]["to"], expected[i + 1]);
    EXPECT_TRUE(r["hops"][i]["duration_ms"].is_number());
  }
  EXPECT_FALSE(r["lock_profile"].empty());
  for (const auto& ch : r["checks"]) EXPECT_TRUE(ch["ok"].get<bool>()) << ch.dump();
  ASSERT_NE(FindCheck(r, "hstore_containment_finds_one_row"), nullptr) << r.dump(2);
  EXPECT_EQ((*FindCheck(r, "hstore_containment_finds_one_row"))["kind"], "user");
  ASSERT_NE(FindCheck(r, "extension_version"), nullptr);
  EXPECT_EQ((*FindCheck(r, "extension_version"))["kind"], "builtin");
  EXPECT_TRUE(HasDependency(DependencyAfter(r), "index", "items_h_gist")) << DependencyAfter(r).dump(2);
  EXPECT_TRUE(HasDependency(DependencyAfter(r), "view", "item_keys")) << DependencyAfter(r).dump(2);
  EXPECT_TRUE(r["drift"].contains("added") && r["drift"].contains("removed") &&
              r["drift"].contains("changed"));
  EXPECT_TRUE(r["clone"]["port"].is_number());

  // Production is untouched, and the clone is gone.
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
  EXPECT_FALSE(PathExists(CloneDir(c, id)));
  EXPECT_TRUE(ReadJournal(c, id).value("clones", json::array()).empty());
}

TEST(DryRun, postgis_3_3_2_to_3_3_2next_validates_with_lock_profile_and_drift) {
  TestCluster c(SchedulerOff());
  if (!Available(c, "postgis")) GTEST_SKIP() << "postgis is not installed (postgresql-15-postgis-3)";
  c.Exec("CREATE EXTENSION postgis VERSION '3.3.2'");
  c.Exec("CREATE TABLE places (id int PRIMARY KEY, geom geometry(Point, 4326))");
  c.Exec(
      "INSERT INTO places SELECT i, ST_SetSRID(ST_MakePoint(i % 180, i % 90), 4326) FROM generate_series(1, "
      "2000) i");
  c.Exec("CREATE INDEX places_gix ON places USING gist (geom)");
  c.Exec("CREATE VIEW place_wkt AS SELECT id, ST_AsText(geom) AS wkt FROM places");
  AddCheck(c, "postgis_distance_works",
           "SELECT ST_DWithin(geom, ST_SetSRID(ST_MakePoint(1, 1), 4326), 0.5) FROM places WHERE id = 1",
           "postgis");
  int64_t id = InsertUpgrade(c, "postgis", "3.3.2", "3.3.2next", {"3.3.2", "3.3.2next"}, "queued");
  RecordBeforeRows(c, id, "postgis");
  TakeSnapshot(c, id);

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  const json& r = job.result;
  ASSERT_EQ(r["hops"].size(), 1u);
  EXPECT_EQ(r["hops"][0]["to"], "3.3.2next");
  ASSERT_FALSE(r["lock_profile"].empty());
  for (const auto& l : r["lock_profile"]) {
    EXPECT_TRUE(l.contains("locktype") && l.contains("object") && l.contains("mode")) << l.dump();
  }
  ASSERT_NE(FindCheck(r, "postgis_full_version"), nullptr) << r.dump(2);
  EXPECT_TRUE((*FindCheck(r, "postgis_full_version"))["ok"].get<bool>());
  EXPECT_NE((*FindCheck(r, "postgis_full_version"))["message"].get<std::string>().find("POSTGIS="),
            std::string::npos);
  for (const auto& ch : r["checks"]) EXPECT_TRUE(ch["ok"].get<bool>()) << ch.dump();
  const json& drift = r["drift"];
  for (const char* k : {"added", "removed", "changed"}) EXPECT_TRUE(drift[k].is_array()) << drift.dump(2);
  EXPECT_TRUE(drift["removed"].empty())
      << "an upgrade that keeps every object must not lose a dependency: " << drift.dump(2);
  EXPECT_TRUE(HasDependency(DependencyAfter(r), "view", "place_wkt")) << DependencyAfter(r).dump(2);
  EXPECT_TRUE(HasDependency(DependencyAfter(r), "table column", "places.geom")) << DependencyAfter(r).dump(2);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'postgis'"), "3.3.2");
}

TEST(DryRun, upgrade_that_drops_a_function_a_view_uses_blocks_naming_the_view) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_dropfn");
  c.Exec("CREATE VIEW answer_view AS SELECT su_dropfn_answer() AS answer");
  int64_t id = SnapshottedUpgrade(c, "su_fixture_dropfn");

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("hop 1.0 -> 1.1 failed"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("answer_view"), std::string::npos)
      << "the reason must name the view: " << job.error;
  EXPECT_NE(job.error.find("DETAIL"), std::string::npos) << job.error;
  ASSERT_TRUE(job.result.contains("failed_hop")) << job.result.dump(2);
  EXPECT_EQ(job.result["failed_hop"]["from"], "1.0");
  EXPECT_EQ(job.result["failed_hop"]["to"], "1.1");
  EXPECT_NE(job.result["failed_hop"]["detail"].get<std::string>().find("answer_view"), std::string::npos);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT answer::text FROM answer_view"), "42");
  EXPECT_FALSE(PathExists(CloneDir(c, id)));
}

// pg_cron's jobs or pg_partman's part_config: rows users wrote into a table the extension
// registered with pg_extension_config_dump. An update script that empties it passes every catalog
// check; the row count before and after on the clone does not.
TEST(DryRun, an_update_that_empties_its_config_table_blocks_naming_the_table) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_configdata VERSION '1.0'");
  c.Exec("INSERT INTO su_cfg_jobs (command) VALUES ('vacuum'), ('analyze'), ('reindex')");
  int64_t id = SnapshottedUpgrade(c, "su_fixture_configdata");

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("loses rows of su_fixture_configdata's own data"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("su_cfg_jobs: 3 row(s) before the upgrade, 0 after"), std::string::npos) << job.error;
  EXPECT_EQ(job.result["config_tables"]["changes"]["losses"].size(), 1u) << job.result.dump(2);
  // Production untouched: the rows and the version are there.
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_cfg_jobs"), "3");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_configdata'"), "1.0");
}

TEST(DryRun, user_health_check_returning_false_blocks_the_upgrade) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_badcheck");
  AddChecks(c, {{"double_still_doubles", "SELECT su_badcheck_double(21) = 42", "su_fixture_badcheck"},
                {"other_extension_check_is_not_run", "SELECT false", "hstore"}});
  int64_t id = SnapshottedUpgrade(c, "su_fixture_badcheck");

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("double_still_doubles"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("returned false"), std::string::npos) << job.error;
  // The upgrade itself committed in the clone: hops are reported, and the check is in the report.
  EXPECT_EQ(job.result["hops"].size(), 1u) << job.result.dump(2);
  const json* check = FindCheck(job.result, "double_still_doubles");
  ASSERT_NE(check, nullptr) << job.result.dump(2);
  EXPECT_FALSE((*check)["ok"].get<bool>());
  EXPECT_EQ((*check)["kind"], "user");
  EXPECT_EQ(FindCheck(job.result, "other_extension_check_is_not_run"), nullptr);
  EXPECT_EQ(c.Scalar("SELECT su_badcheck_double(21)::text"), "42");
}

TEST(DryRun, health_check_that_errors_or_runs_past_its_timeout_fails_with_that_message) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  AddChecks(c,
            {{"check_that_errors", "SELECT 1 / 0 = 1", "su_fixture_counter"},
             {"check_that_is_too_slow", "SELECT pg_sleep(60) IS NOT NULL", "su_fixture_counter", "1 second"},
             {"check_with_two_statements", "SELECT true; SELECT true", "su_fixture_counter"}});
  int64_t id = SnapshottedUpgrade(c, "su_fixture_counter");

  auto started = std::chrono::steady_clock::now();
  auto job = DryRun(c, id);
  auto elapsed = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("check_that_errors"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("division by zero"), std::string::npos) << job.error;

  const json* errors = FindCheck(job.result, "check_that_errors");
  const json* slow = FindCheck(job.result, "check_that_is_too_slow");
  const json* two = FindCheck(job.result, "check_with_two_statements");
  ASSERT_TRUE(errors && slow && two) << job.result.dump(2);
  EXPECT_FALSE((*errors)["ok"].get<bool>());
  EXPECT_FALSE((*slow)["ok"].get<bool>());
  EXPECT_NE((*slow)["message"].get<std::string>().find("statement timeout"), std::string::npos)
      << slow->dump();
  EXPECT_LT((*slow)["duration_ms"].get<int64_t>(), 10000) << "the 1 s timeout was not enforced";
  EXPECT_FALSE((*two)["ok"].get<bool>()) << two->dump();
  EXPECT_LT(elapsed, 60s);
}

TEST(DryRun, multi_hop_upgrade_whose_middle_hop_fails_names_that_hop) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_multihop");
  int64_t id = InsertUpgrade(c, "su_fixture_multihop", "1.0", "1.3", {"1.0", "1.1", "1.2", "1.3"}, "queued");
  TakeSnapshot(c, id);

  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("hop 1.1 -> 1.2 failed"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("the 1.2 data migration failed"), std::string::npos) << job.error;
  EXPECT_NE(job.error.find("fails this hop on purpose"), std::string::npos) << "DETAIL is part of the reason";
  ASSERT_EQ(job.result["hops"].size(), 1u) << job.result.dump(2);
  EXPECT_EQ(job.result["hops"][0]["to"], "1.1");
  EXPECT_EQ(job.result["failed_hop"]["from"], "1.1");
  EXPECT_EQ(job.result["failed_hop"]["to"], "1.2");
  EXPECT_EQ(c.Scalar("SELECT su_multihop_version()"), "1.0");
}

TEST(DryRun, dry_run_without_a_snapshot_blocks_and_leaves_no_clone) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  int64_t id = InsertUpgrade(c, "su_fixture_counter", "1.0", "1.1", {"1.0", "1.1"}, "dry_running");
  auto job = DryRun(c, id);
  ASSERT_EQ(job.state, "failed");
  EXPECT_NE(job.error.find("no usable snapshot"), std::string::npos) << job.error;
  EXPECT_EQ(job.result["reason"], job.error);
  EXPECT_FALSE(PathExists(CloneDir(c, id)));
  EXPECT_TRUE(ReadJournal(c, id).value("clones", json::array()).empty());
}

std::set<std::string> ArchiveFiles(const TestCluster& c) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(c.info().agent_config.wal_archive_dir))
    out.insert(e.path().filename().string());
  return out;
}

TEST(DryRun, clone_is_isolated_from_production_and_gone_afterwards) {
  TestCluster c(SchedulerOff());
  c.Exec("CREATE EXTENSION su_fixture_counter");
  AddChecks(c, {// Runs in the clone: a WAL switch there would reach production's archive if the clone
                // archived.
                {"clone_switches_wal", "SELECT pg_switch_wal() IS NOT NULL", "su_fixture_counter"},
                // Keeps the clone up long enough for this test to look at it from outside.
                {"clone_stays_up_a_moment", "SELECT pg_sleep(4) IS NOT NULL", "su_fixture_counter"}});
  int64_t id = SnapshottedUpgrade(c, "su_fixture_counter");
  ASSERT_TRUE(WaitUntil(
      [&] {
        return c.Scalar("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'") == "0";
      },
      60s))
      << "production's archiver did not settle";
  auto archive_before = ArchiveFiles(c);

  SetState(c, id, "dry_running");
  auto running = std::async(std::launch::async, [&] { return RunAgentJob(c, JobKind::kDryRun, id); });

  // Production must never see the clone: no walsender (a standby), no foreign client.
  std::atomic<bool> done{false};
  std::string intruders;
  auto watcher = std::async(std::launch::async, [&] {
    auto conn = c.Connect();
    while (!done.load()) {
      auto r = conn->Exec(
          "SELECT coalesce(string_agg(backend_type || ':' || coalesce(application_name, ''), ', '), '') "
          "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (backend_type = 'walsender' OR "
          "(backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'safe-upgrade%'))");
      if (!r.Scalar().empty()) intruders += r.Scalar() + "; ";
      std::this_thread::sleep_for(50ms);
    }
  });

  // Find the running clone through the journal and look at it from outside.
  json entry;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto clones = ReadJournal(c, id).value("clones", json::array());
        if (clones.empty()) return false;
        entry = clones[0];
        return PathExists(JoinPath(entry["data_dir"].get<std::string>(), "postmaster.pid"));
      },
      120s));
  std::string data_dir = entry["data_dir"], socket_dir = entry["socket_dir"];
  int port = entry["port"];
  EXPECT_NE(port, c.info().port);
  std::unique_ptr<PgConn> probe;
  ASSERT_TRUE(WaitUntil(
      [&] {
        probe = std::make_unique<PgConn>(ConnInfo(socket_dir, port, "postgres", "postgres", "su-test-probe"));
        return probe->Exec("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_counter'")
                   .Scalar() == "1.1";
      },
      120s))
      << "the clone never showed the upgraded extension";
  long clone_pid = ServerControl(kPgBinDir, data_dir, "pg_ctl").PostmasterPid();
  EXPECT_GT(clone_pid, 0);
  EXPECT_EQ(probe->Exec("SHOW archive_mode").Scalar(), "off");
  EXPECT_EQ(probe->Exec("SHOW primary_conninfo").Scalar(), "");
  EXPECT_EQ(probe->Exec("SHOW restore_command").Scalar(), "");
  EXPECT_EQ(probe->Exec("SHOW listen_addresses").Scalar(), "");
  EXPECT_EQ(probe->Exec("SHOW safe_upgrade.enabled").Scalar(), "off");
  EXPECT_EQ(probe->Exec("SELECT pg_is_in_recovery()::text").Scalar(), "false");
  EXPECT_FALSE(PathExists(JoinPath(data_dir, "standby.signal")));
  EXPECT_FALSE(PathExists(JoinPath(data_dir, "recovery.signal")));
  EXPECT_FALSE(PortOpen(port)) << "the clone must not listen on TCP";
  probe.reset();

  auto job = running.get();
  done = true;
  watcher.get();
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  EXPECT_EQ(intruders, "") << "connections to production during the dry run";
  EXPECT_EQ(ArchiveFiles(c), archive_before) << "the dry run added files to production's WAL archive";
  EXPECT_EQ(job.result["isolation"]["archive_mode"], "off");

  // Torn down: no postmaster, no socket, no directory, no journal entry.
  EXPECT_TRUE(WaitUntil([&] { return !ProcessAlive(static_cast<pid_t>(clone_pid)); }, 10s))
      << "the clone's postmaster outlived the dry run";
  EXPECT_FALSE(PathExists(JoinPath(socket_dir, ".s.PGSQL." + std::to_string(port))));
  EXPECT_FALSE(PortOpen(port));
  EXPECT_FALSE(PathExists(data_dir));
  EXPECT_TRUE(ReadJournal(c, id).value("clones", json::array()).empty());
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_counter'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_counter_runs"), "0");
}

TEST(DryRun, orphaned_clone_is_removed_when_the_agent_restarts_after_a_crash) {
  ClusterOptions options = SchedulerOff();
  options.agent_env = {{"SAFE_UPGRADE_FAILPOINT", "dryrun:after_clone_start"}};
  TestCluster c(options);
  c.Exec("CREATE EXTENSION su_fixture_counter");
  int64_t id = SnapshottedUpgrade(c, "su_fixture_counter");

  SetState(c, id, "dry_running");
  auto client = AgentClient::Create(c.info().agent_config.listen, 10000);
  std::string job_id;
  ASSERT_TRUE(client->StartJob(JobKind::kDryRun, id, job_id).ok);
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 120s)) << "the failpoint did not kill the agent";

  auto clones = ReadJournal(c, id).value("clones", json::array());
  ASSERT_EQ(clones.size(), 1u) << "the clone must be journaled before it starts";
  std::string dir = clones[0]["path"], data_dir = clones[0]["data_dir"];
  long clone_pid = ServerControl(kPgBinDir, data_dir, "pg_ctl").PostmasterPid();
  ASSERT_GT(clone_pid, 0);
  ASSERT_TRUE(ProcessAlive(static_cast<pid_t>(clone_pid))) << "the clone outlives the crashed agent";

  c.StartAgent();  // without the failpoint
  EXPECT_TRUE(WaitUntil([&] { return !ProcessAlive(static_cast<pid_t>(clone_pid)); }, 60s)) << c.AgentLog();
  EXPECT_TRUE(WaitUntil([&] { return !PathExists(dir); }, 60s));
  EXPECT_TRUE(ReadJournal(c, id).value("clones", json::array()).empty());
  EXPECT_NE(c.AgentLog().find("left by an interrupted dry run"), std::string::npos) << c.AgentLog();
  // The snapshot the clone was made from is intact.
  EXPECT_TRUE(
      PathExists(JoinPath(c.info().agent_config.snapshot_dir, "snap-" + std::to_string(id) + "/data")));
}

}  // namespace
}  // namespace safe_upgrade::testing

namespace safe_upgrade::testing {
namespace {

// Through the scheduler: begin() with dry_run_only reaches validated with the dry-run report in
// the catalog, and a dry run that blocks leaves production untouched with the reason stored.
TEST(DryRun, scheduler_stores_the_dry_run_report_and_blocks_on_failure) {
  TestCluster c;
  c.Exec("CREATE EXTENSION su_fixture_dropfn");
  c.Exec("CREATE EXTENSION su_fixture_counter");
  c.Exec("CREATE VIEW answer_view AS SELECT su_dropfn_answer() AS answer");

  int64_t ok_id = c.BeginUpgrade("su_fixture_counter", "1.1", R"({"dry_run_only": true})");
  ASSERT_EQ(c.WaitForTerminalState(ok_id), "validated") << c.Events(ok_id);
  auto report = nlohmann::json::parse(
      c.Scalar("SELECT report -> 'dry_run' FROM safe_upgrade.upgrades WHERE id = $1::bigint",
               {std::to_string(ok_id)}));
  EXPECT_EQ(report["hops"].size(), 1u) << report.dump(2);
  EXPECT_FALSE(report["checks"].empty());

  int64_t bad_id = c.BeginUpgrade("su_fixture_dropfn", "1.1", R"({"dry_run_only": true})");
  ASSERT_EQ(c.WaitForTerminalState(bad_id), "blocked") << c.Events(bad_id);
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(bad_id)});
  EXPECT_NE(error.find("answer_view"), std::string::npos) << error;
  EXPECT_EQ(c.Scalar("SELECT report -> 'dry_run' -> 'failed_hop' ->> 'to' FROM safe_upgrade.upgrades "
                     "WHERE id = $1::bigint",
                     {std::to_string(bad_id)}),
            "1.1");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'"), "1.0");
}

}  // namespace
}  // namespace safe_upgrade::testing
