// A cluster with parts outside its data directory: a tablespace elsewhere on disk, and pg_wal a
// symbolic link to another directory (as after initdb --waldir). The snapshot maps the tablespace
// into itself, the dry-run clone and the parked target get copies of their own, and a rollback
// (both paths) sets production's directories aside and brings the cluster back with the
// tablespace at its location and pg_wal still a link to where it was.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "fixtures.h"
#include "postgres/catalog.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

TEST(Tablespaces, snapshot_maps_each_tablespace_into_itself_verifies_it_and_records_the_layout) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  OutsideDirs o = MoveWalAndCreateTablespace(c);
  c.Exec("CREATE TABLE ts_marks (n int) TABLESPACE ts1; INSERT INTO ts_marks SELECT generate_series(1, 10);");
  auto before = Entries(o.ts_location);
  int64_t id = InsertUpgrade(c, "fixture_ext", "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");

  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  EXPECT_NE(job.EventText().find("pg_verifybackup: backup verified"), std::string::npos) << job.EventText();

  const AgentConfig& config = c.info().agent_config;
  std::string snapshot_id = SnapshotIdFor(id);
  json meta = LoadSnapshotMeta(config, snapshot_id);
  ASSERT_EQ(meta["layout"]["tablespaces"].size(), 1u) << meta.dump(2);
  EXPECT_EQ(meta["layout"]["tablespaces"][0].value("oid", ""), o.ts_oid) << meta.dump(2);
  EXPECT_EQ(meta["layout"]["tablespaces"][0].value("location", ""), o.ts_location) << meta.dump(2);
  EXPECT_EQ(meta["layout"].value("wal_dir", ""), o.wal_dir) << meta.dump(2);
  std::string version_dir = meta["layout"].value("version_dir", "");
  EXPECT_EQ(version_dir.rfind("PG_15_", 0), 0u) << meta.dump(2);

  // The snapshot's link points at its own copy, which holds the table's files.
  std::string copy = JoinPath(JoinPath(SnapshotDir(config, snapshot_id), "tablespaces"), o.ts_oid);
  std::string link = JoinPath(SnapshotDataDir(config, snapshot_id), "pg_tblspc/" + o.ts_oid);
  ASSERT_TRUE(fs::is_symlink(link)) << link;
  EXPECT_EQ(fs::read_symlink(link).string(), copy);
  EXPECT_GT(TreeSize(JoinPath(copy, version_dir)), 0u);
  EXPECT_GE(meta.value("size_bytes", uint64_t{0}),
            TreeSize(copy) + TreeSize(SnapshotDataDir(config, snapshot_id)));
  // Production's tablespace directory is as it was.
  EXPECT_EQ(Joined(Entries(o.ts_location)), Joined(before));
  EXPECT_EQ(Joined(before), version_dir);
}

// A tablespace inside the data directory would be copied with it and could not be put back at its
// own location: plan() refuses it with a reason, before any copy, and says how to fix it.
TEST(Tablespaces, plan_blocks_a_tablespace_inside_the_data_directory_naming_it) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  json before = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  for (const auto& r : before["reasons"])
    EXPECT_EQ(r.get<std::string>().find("tablespace"), std::string::npos) << before["reasons"].dump();
  std::string inside = JoinPath(c.info().data_dir, "inside_ts");
  ASSERT_EQ(c.RunAsServiceUser({"mkdir", inside}).exit_code, 0);
  c.Exec("CREATE TABLESPACE inside_ts LOCATION '" + inside + "'");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  EXPECT_EQ(plan.value("verdict", ""), "blocked") << plan.dump(2);
  std::string reasons = plan["reasons"].dump();
  EXPECT_NE(reasons.find("tablespace inside_ts (" + inside +
                         ") is at a relative path or inside the data directory"),
            std::string::npos)
      << reasons;
  EXPECT_EQ(plan["pitr"]["tablespaces"][0].value("name", ""), "inside_ts") << plan["pitr"].dump(2);
}

TEST(Tablespaces, dry_run_clone_reads_its_own_copy_of_the_tablespace_never_production_s) {
  TestCluster c;
  OutsideDirs o = MoveWalAndCreateTablespace(c);
  PrepareRollbackFixture(c);
  c.Exec(
      "ALTER TABLE marks SET TABLESPACE ts1; INSERT INTO marks SELECT 1, g FROM generate_series(1, 10) g;");
  // Runs in the clone: its tablespace link must lead to a copy, with the rows in it.
  c.Scalar(
      "SELECT safe_upgrade.add_health_check('clone_has_its_own_tablespace', "
      "$1, 'su_rollback_fixture')",
      {"SELECT pg_tablespace_location(oid) NOT IN ('', '" + o.ts_location +
       "') AND (SELECT count(*) FROM marks) = 10 FROM pg_tablespace WHERE spcname = 'ts1'"});

  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"dry_run_only": true})");
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "validated") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "10");
  EXPECT_EQ(c.Scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
            o.ts_location);
}

// Both paths: "ready" swaps in the parked target, "cold" restores the snapshot and replays WAL.
class TablespaceRollback : public ::testing::TestWithParam<std::string> {};

TEST_P(TablespaceRollback,
       rollback_keeps_exactly_the_rows_before_the_restore_point_with_tablespace_and_pg_wal_in_place) {
  const std::string mode = GetParam();
  TestCluster c;
  OutsideDirs o = MoveWalAndCreateTablespace(c);
  PrepareRollbackFixture(c);
  c.Exec("ALTER TABLE marks SET TABLESPACE ts1");
  HeldApply h = StartHeldUpgrade(c, mode);
  // Batch 1 after the snapshot, before the restore point: kept; batches 2 and 3 after it: discarded.
  ASSERT_TRUE(WriteMarkersAroundDoomedApply(c, h, c.Connect(), [&] {
    if (mode != "ready") return;
    // The target's tablespace is a copy of its own, next to production's.
    std::string target_link = c.info().data_dir + ".ready-" + std::to_string(h.id) + "/pg_tblspc/" + o.ts_oid;
    ASSERT_TRUE(fs::is_symlink(target_link)) << target_link;
    std::string target_ts = fs::read_symlink(target_link).string();
    EXPECT_EQ(target_ts.rfind(o.ts_location + "/", 0), 0u) << target_ts;
    EXPECT_NE(target_ts, o.ts_location);
  }));

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  json report = RollbackReport(c, h.id);
  EXPECT_EQ(report.value("path", ""), mode == "ready" ? "parked target" : "snapshot restore")
      << report.dump();

  // Exactly the rows written before the restore point, in the table that lives in the tablespace.
  ExpectOnlyRowsBeforeRestorePoint(c);
  // The tablespace is at its original location, and that is where the table's file is.
  EXPECT_EQ(c.Scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
            o.ts_location);
  std::string link = JoinPath(c.info().data_dir, "pg_tblspc/" + o.ts_oid);
  ASSERT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::read_symlink(link).string(), o.ts_location);
  std::string relation = c.Scalar("SELECT pg_relation_filepath('marks')");
  EXPECT_TRUE(PathExists(JoinPath(c.info().data_dir, relation))) << relation;
  // pg_wal is still a link to the same place, which holds the WAL being written now.
  std::string wal = JoinPath(c.info().data_dir, "pg_wal");
  ASSERT_TRUE(fs::is_symlink(wal));
  EXPECT_EQ(fs::read_symlink(wal).string(), o.wal_dir);
  c.Exec("INSERT INTO marks VALUES (4, 1)");
  std::string segment = c.Scalar("SELECT pg_walfile_name(pg_current_wal_lsn())");
  EXPECT_TRUE(PathExists(JoinPath(o.wal_dir, segment))) << segment;

  // Production's directories were moved aside, never deleted, and the moved-aside data
  // directory's links follow them, so it is whole on its own.
  std::string aside = report.value("failed_data_directory", "");
  ASSERT_TRUE(IsDirectory(aside)) << report.dump();
  std::string aside_ts = fs::read_symlink(JoinPath(aside, "pg_tblspc/" + o.ts_oid)).string();
  std::string aside_wal = fs::read_symlink(JoinPath(aside, "pg_wal")).string();
  std::string suffix = aside.substr(aside.find(".failed-") + 8);
  EXPECT_EQ(aside_wal, o.wal_dir + ".failed-" + suffix);
  EXPECT_TRUE(IsDirectory(aside_wal));
  EXPECT_EQ(aside_ts.rfind(o.ts_location + "/PG_15_", 0), 0u) << aside_ts;
  EXPECT_NE(aside_ts.find(".failed-" + suffix), std::string::npos) << aside_ts;
  EXPECT_TRUE(IsDirectory(aside_ts));
  std::string set_aside = report["set_aside"].dump();
  for (const auto& path : {aside, aside_ts, aside_wal})
    EXPECT_NE(set_aside.find(path), std::string::npos) << path << " not in " << set_aside;
  // Nothing else is left next to them: no copy of the target, no restore scratch.
  std::string version_dir = relation.substr(
      relation.find("PG_15_"), relation.find('/', relation.find("PG_15_")) - relation.find("PG_15_"));
  EXPECT_EQ(Joined(Entries(o.ts_location)), version_dir + " " + version_dir + ".failed-" + suffix);
  EXPECT_EQ(Joined(Entries(Dirname(o.wal_dir))), "pg_wal pg_wal.failed-" + suffix + " ts1");
}

INSTANTIATE_TEST_SUITE_P(ReadyAndCold, TablespaceRollback, ::testing::Values("ready", "cold"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace safe_upgrade::testing
