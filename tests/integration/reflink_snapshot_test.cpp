// Reflink snapshots (agent.snapshot_method = "reflink") on a real XFS filesystem with reflink=1
// on a loop device, holding the whole sandbox: the snapshot is pg_backup_start/stop around clones
// of the files, verified by its WAL and a throwaway clone, and every path that relies on it works
// as with pg_basebackup's: an upgrade that succeeds, one its dry run blocks, and both rollbacks
// (the parked target and the cold restore) with marker rows before and after the restore point.
// Elsewhere (ext4 here), "auto" falls back to pg_basebackup saying why, and "reflink" fails
// before production is touched.
//
// The XFS tests need root (mount), mkfs.xfs (Debian's xfsprogs) and loop devices; without them
// they are skipped with the reason, which ctest counts as skipped, not passed.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "base/process.h"
#include "fixtures.h"
#include "postgres/catalog.h"
#include "storage/reflink.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

const std::map<std::string, std::string> kSchedulerOff = {{"safe_upgrade.enabled", "off"}};

bool LsnGreaterOrEqual(const TestCluster& c, const std::string& a, const std::string& b) {
  return c.Scalar("SELECT ($1::pg_lsn >= $2::pg_lsn)::text", {a, b}) == "true";
}

// A sparse image file, formatted XFS with reflink=1 and loop-mounted; unmounted and detached when
// the object goes, whatever the test did. skip_reason() says why there is none.
class XfsMount {
 public:
  XfsMount() {
    if (geteuid() != 0) {
      skip_ = "mounting a loop device needs root";
      return;
    }
    if (access("/sbin/mkfs.xfs", X_OK) != 0 && access("/usr/sbin/mkfs.xfs", X_OK) != 0) {
      skip_ = "mkfs.xfs is not installed (Debian package xfsprogs)";
      return;
    }
    char tmpl[] = "/tmp/su-xfs-XXXXXX";
    if (!mkdtemp(tmpl)) {
      skip_ = "mkdtemp failed";
      return;
    }
    dir_ = tmpl;
    image_ = JoinPath(dir_, "xfs.img");
    mount_point_ = JoinPath(dir_, "mnt");
    EnsureDir(mount_point_, 0755);
    chmod(dir_.c_str(), 0755);
    for (const auto& argv :
         std::vector<std::vector<std::string>>{{"truncate", "-s", "3G", image_},
                                               {"mkfs.xfs", "-q", "-m", "reflink=1", image_},
                                               {"mount", "-o", "loop", image_, mount_point_}}) {
      auto r = RunProcess(argv);
      if (!r.Ok()) {
        skip_ = "cannot make an XFS filesystem on a loop device: " + r.Describe(argv[0]);
        return;
      }
    }
    mounted_ = true;
    chmod(mount_point_.c_str(), 0755);
  }
  ~XfsMount() {
    if (mounted_) {
      // The loop device of "mount -o loop" is detached at unmount (autoclear); a lazy unmount
      // still frees it if a straggling process holds the filesystem.
      if (!RunProcess({"umount", mount_point_}).Ok()) RunProcess({"umount", "-l", mount_point_});
      auto loops = RunProcess({"losetup", "-j", image_});
      if (loops.Ok() && !loops.out.empty())
        RunProcess({"losetup", "-d", loops.out.substr(0, loops.out.find(':'))});
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  const std::string& skip_reason() const { return skip_; }
  const std::string& mount_point() const { return mount_point_; }

 private:
  std::string skip_, dir_, image_, mount_point_;
  bool mounted_ = false;
};

void RestartAgentWithMethod(TestCluster& c, const std::string& method) {
  AgentConfig config = c.info().agent_config;
  config.snapshot_method = method;
  c.StopAgent();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(config), 0644);
  c.StartAgent();
}

json Meta(const TestCluster& c, int64_t id) {
  return LoadSnapshotMeta(c.info().agent_config, SnapshotIdFor(id));
}

ClusterOptions OnXfs(const XfsMount& m, std::map<std::string, std::string> settings = {}) {
  ClusterOptions o;
  o.settings = std::move(settings);
  o.root_parent = m.mount_point();
  return o;
}

// Each test on a fresh XFS filesystem holding the whole sandbox, its agent set to
// snapshot_method = "reflink"; skipped with the reason where no such filesystem can be made.
class ReflinkSnapshot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!mount_.skip_reason().empty()) GTEST_SKIP() << mount_.skip_reason();
  }
  TestCluster& Start(std::map<std::string, std::string> settings = {}) {
    cluster_ = std::make_unique<TestCluster>(OnXfs(mount_, std::move(settings)));
    RestartAgentWithMethod(*cluster_, "reflink");
    return *cluster_;
  }
  // Through the scheduler: setup_sql, then ext to version; returns the upgrade's id once it ended.
  int64_t Upgrade(const std::string& setup_sql, const std::string& ext, const std::string& version,
                  const std::string& expected_state) {
    TestCluster& c = Start();
    c.Exec(setup_sql);
    int64_t id = c.BeginUpgrade(ext, version);
    EXPECT_EQ(c.WaitForTerminalState(id, 600s), expected_state) << c.Events(id);
    EXPECT_EQ(Meta(c, id).value("method", ""), "reflink");
    return id;
  }

  XfsMount mount_;
  std::unique_ptr<TestCluster> cluster_;  // declared after the mount: gone before it is unmounted
};

class ReflinkRollback : public ReflinkSnapshot, public ::testing::WithParamInterface<std::string> {};

TEST_F(ReflinkSnapshot,
       snapshot_is_a_verified_reflink_copy_that_takes_almost_no_disk_and_a_dry_run_clones_it) {
  TestCluster& c = Start(kSchedulerOff);
  c.Exec(
      "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 2500000) g;"
      "CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g;");
  std::string unlogged = c.Scalar("SELECT pg_relation_filepath('scratch')");
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  int64_t id = InsertUpgrade(c, "hstore", "1.4", "1.8", {"1.4", "1.5", "1.6", "1.7", "1.8"}, "snapshotting");

  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  json meta = Meta(c, id);
  EXPECT_EQ(meta.value("method", ""), "reflink") << meta.dump(2);
  EXPECT_EQ(meta["verification"].value("method", ""), "wal_and_clone") << meta.dump(2);
  EXPECT_TRUE(meta["verification"]["clone"].value("reached_consistency", false)) << meta.dump(2);
  EXPECT_FALSE(meta["verification"].value("data_read", true)) << meta.dump(2);
  std::string events = job.EventText();
  EXPECT_NE(events.find("snapshot method: reflink"), std::string::npos) << events;
  EXPECT_NE(events.find("pg_backup_start"), std::string::npos) << events;
  EXPECT_NE(events.find("pg_waldump read every WAL record"), std::string::npos) << events;
  EXPECT_NE(events.find("reached a consistent state"), std::string::npos) << events;

  // A startable plain backup: backup_label, the WAL of its range, none of the live server's files.
  std::string data = SnapshotDataDir(c.info().agent_config, SnapshotIdFor(id));
  EXPECT_NE(ReadFile(JoinPath(data, "backup_label"))
                .find("START WAL LOCATION: " + meta.value("backup_start_lsn", "")),
            std::string::npos);
  EXPECT_FALSE(PathExists(JoinPath(data, "postmaster.pid")));
  EXPECT_FALSE(PathExists(JoinPath(data, "tablespace_map")));
  EXPECT_FALSE(PathExists(JoinPath(data, unlogged))) << unlogged;
  EXPECT_TRUE(PathExists(JoinPath(data, unlogged + "_init"))) << unlogged;
  EXPECT_TRUE(IsDirectory(JoinPath(data, "pg_wal/archive_status")));
  EXPECT_GT(TreeSize(JoinPath(data, "pg_wal")), 0u);
  EXPECT_TRUE(LsnGreaterOrEqual(c, meta.value("backup_stop_lsn", ""), meta.value("backup_start_lsn", "")));

  // The files share production's extents: the filesystem lost far less than the snapshot's size.
  // What it lost is mostly WAL: the segments production began meanwhile and their archived copies.
  uint64_t size = meta.value("size_bytes", uint64_t{0}), used = meta.value("disk_used_bytes", uint64_t{0});
  const uint64_t segment = 16u << 20;
  EXPECT_GT(size, 200u << 20) << meta.dump(2);
  EXPECT_LT(used, size / 10 + 4 * segment) << meta.dump(2);

  // The dry run clones it and the upgrade validates there; the throwaway clone is gone.
  SetState(c, id, "dry_running");
  auto dry = RunAgentJob(c, JobKind::kDryRun, id);
  EXPECT_EQ(dry.state, "succeeded") << dry.error << "\n" << dry.EventText();
  EXPECT_FALSE(PathExists(JoinPath(c.info().agent_config.ClonesDir(), "dryrun-" + std::to_string(id))));
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
}

TEST_F(ReflinkSnapshot, upgrade_succeeds_on_production_with_a_reflink_snapshot) {
  int64_t id = Upgrade(
      "CREATE EXTENSION hstore VERSION '1.4'; CREATE TABLE kv (h hstore); INSERT INTO kv VALUES ('a=>1');",
      "hstore", "1.8", "succeeded");
  TestCluster& c = *cluster_;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.8");
  EXPECT_EQ(c.Scalar("SELECT h -> 'a' FROM kv"), "1");
  EXPECT_NE(c.Events(id).find("snapshot method: reflink"), std::string::npos) << c.Events(id);
}

TEST_F(ReflinkSnapshot, dry_run_on_a_reflink_snapshot_blocks_a_breaking_upgrade_and_production_is_untouched) {
  int64_t id = Upgrade(
      "CREATE EXTENSION su_fixture_dropfn; CREATE VIEW answer_view AS SELECT su_dropfn_answer() AS answer;",
      "su_fixture_dropfn", "1.1", "blocked");
  TestCluster& c = *cluster_;
  EXPECT_NE(c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)})
                .find("answer_view"),
            std::string::npos);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT answer::text FROM answer_view"), "42");
}

// Both rollback paths from a reflink snapshot, with a tablespace and a linked pg_wal on the same
// filesystem: exactly the rows written before the restore point come back.
TEST_P(ReflinkRollback, rollback_from_a_reflink_snapshot_keeps_exactly_the_rows_before_the_restore_point) {
  const std::string mode = GetParam();
  TestCluster& c = Start();
  OutsideDirs o = MoveWalAndCreateTablespace(c);
  PrepareRollbackFixture(c);
  c.Exec("ALTER TABLE marks SET TABLESPACE ts1");
  HeldApply h = StartHeldUpgrade(c, mode);
  json meta = Meta(c, h.id);
  EXPECT_EQ(meta.value("method", ""), "reflink") << meta.dump(2);
  ASSERT_EQ(meta["layout"]["tablespaces"].size(), 1u) << meta.dump(2);
  // Batch 1 after the snapshot, before the restore point: kept; batches 2 and 3 after it: discarded.
  ASSERT_TRUE(WriteMarkersAroundDoomedApply(c, h, c.Connect()));

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  json report = RollbackReport(c, h.id);
  EXPECT_EQ(report.value("path", ""), mode == "ready" ? "parked target" : "snapshot restore")
      << report.dump();
  ExpectOnlyRowsBeforeRestorePoint(c);
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "1");
  EXPECT_EQ(c.Scalar("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"),
            o.ts_location);
  EXPECT_EQ(fs::read_symlink(JoinPath(c.info().data_dir, "pg_wal")).string(), o.wal_dir);
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  c.Exec("INSERT INTO marks VALUES (4, 1)");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 4"), "1");
  EXPECT_FALSE(PathExists(ReadyDir(c, h.id)));
}

INSTANTIATE_TEST_SUITE_P(Reflink, ReflinkRollback, ::testing::Values("ready", "cold"),
                         [](const auto& info) { return info.param; });

// /tmp is ext4 here: it cannot clone extents, so these need neither root nor a mount.
bool TmpClonesExtents() { return CopiesShareExtents("/tmp", "/tmp"); }

json AgentStatus(const TestCluster& c) {
  return json::parse(c.Scalar("SELECT row_to_json(a)::text FROM safe_upgrade.agent_status() a"));
}

TEST(ReflinkFallback, auto_where_extents_cannot_be_cloned_takes_a_basebackup_and_records_why) {
  if (TmpClonesExtents()) GTEST_SKIP() << "/tmp clones extents here";
  TestCluster c(
      {.settings = {{"safe_upgrade.enabled", "off"}, {"safe_upgrade.agent_check_interval", "'1s'"}}});
  int64_t id = InsertUpgrade(c, "fixture_ext", "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");
  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
  json meta = Meta(c, id);
  EXPECT_EQ(meta.value("method", ""), "basebackup") << meta.dump(2);
  EXPECT_EQ(meta["verification"].value("method", ""), "pg_verifybackup") << meta.dump(2);
  EXPECT_NE(meta.value("method_reason", "").find("reflink is not possible"), std::string::npos)
      << meta.dump(2);
  EXPECT_NE(job.EventText().find("snapshot method: basebackup (reflink is not possible"), std::string::npos)
      << job.EventText();
  EXPECT_NE(job.EventText().find("pg_verifybackup: backup verified"), std::string::npos);

  // agent_status() and plan() say the same, with the disk each method would need.
  ASSERT_TRUE(WaitUntil([&] { return AgentStatus(c).value("snapshot_method", "") == "basebackup"; }, 30s));
  json status = AgentStatus(c);
  EXPECT_EQ(status.value("snapshot_method_configured", ""), "auto");
  EXPECT_TRUE(status.value("snapshot_method_possible", false));
  EXPECT_NE(status.value("snapshot_method_reason", "").find("reflink is not possible"), std::string::npos)
      << status.dump();
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  json pitr = plan["pitr"];
  EXPECT_EQ(pitr.value("snapshot_method", ""), "basebackup") << pitr.dump(2);
  uint64_t cluster = pitr.value("cluster_size_bytes", uint64_t{0});
  EXPECT_EQ(pitr["snapshot_extra_disk"].value("basebackup_bytes", uint64_t{0}), cluster) << pitr.dump(2);
  EXPECT_EQ(pitr["snapshot_extra_disk"].value("reflink_bytes", uint64_t{0}), 4 * (16u << 20) + cluster / 200)
      << pitr.dump(2);
  EXPECT_EQ(pitr.value("snapshot_disk_needed_bytes", uint64_t{0}), cluster) << pitr.dump(2);
}

TEST(ReflinkFallback, reflink_asked_for_where_it_cannot_be_had_fails_before_production_is_touched) {
  if (TmpClonesExtents()) GTEST_SKIP() << "/tmp clones extents here";
  TestCluster c(
      {.settings = {{"safe_upgrade.enabled", "off"}, {"safe_upgrade.agent_check_interval", "'1s'"}}});
  RestartAgentWithMethod(c, "reflink");
  int64_t id = InsertUpgrade(c, "fixture_ext", "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");
  std::string checkpoints = c.Scalar("SELECT checkpoints_req::text FROM pg_stat_bgwriter");
  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "failed") << job.EventText();
  EXPECT_NE(job.error.find("cannot take a reflink snapshot: agent.snapshot_method is \"reflink\", but"),
            std::string::npos)
      << job.error;
  EXPECT_NE(job.error.find("FICLONE"), std::string::npos) << job.error;
  // No backup was started (it would have requested a checkpoint), nothing was copied.
  EXPECT_EQ(c.Scalar("SELECT checkpoints_req::text FROM pg_stat_bgwriter"), checkpoints);
  std::string dir = SnapshotDir(c.info().agent_config, SnapshotIdFor(id));
  EXPECT_FALSE(PathExists(JoinPath(dir, "data.partial")));
  EXPECT_FALSE(PathExists(JoinPath(dir, "data")));

  // plan() blocks, naming the reason.
  ASSERT_TRUE(
      WaitUntil([&] { return AgentStatus(c).value("snapshot_method_possible", true) == false; }, 30s));
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('hstore', '1.8')::text"));
  EXPECT_EQ(plan.value("verdict", ""), "blocked") << plan.dump(2);
  EXPECT_NE(plan["reasons"].dump().find("agent.snapshot_method is \\\"reflink\\\""), std::string::npos)
      << plan["reasons"].dump();
}

}  // namespace
}  // namespace safe_upgrade::testing
