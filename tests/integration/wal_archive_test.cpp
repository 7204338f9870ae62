// wal-push / wal-fetch with real segments from a real cluster, run as PostgreSQL runs them (the
// agent binary, as the service user): the sandbox's archive_command archives, re-pushes are
// idempotent, conflicting or foreign segments are refused, and fetch round-trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

// One cluster for the suite: every test makes its own segment switch and works on its own file
// names, and a cluster per test would mostly measure initdb.
class WalArchive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new TestCluster(ClusterOptions{.start_agent = false}); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    scratch_ = cluster_->ScratchDir("walscratch-" +
                                    std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }

  const TestCluster& c() const { return *cluster_; }
  std::string Archive() const { return c().info().agent_config.wal_archive_dir; }
  std::string Agent() const { return JoinPath(JoinPath(c().info().dir, "bin"), "safe-upgrade-agent"); }

  // Forces a segment switch after some WAL and waits until the archiver has pushed it.
  std::string SwitchAndWaitArchived() {
    c().Exec("CREATE TABLE IF NOT EXISTS walgen (x int); INSERT INTO walgen SELECT generate_series(1, 1000)");
    std::string seg = c().Scalar("SELECT pg_walfile_name(pg_switch_wal())");
    EXPECT_TRUE(WaitUntil([&] { return PathExists(JoinPath(Archive(), seg)); }, 60s))
        << seg << " was not archived; postgres.log:\n"
        << c().ServerLog();
    return seg;
  }

  ProcessResult Push(const std::string& path) {
    return c().RunAsServiceUser({Agent(), "wal-push", "--config", c().info().agent_config_path, path});
  }
  ProcessResult Fetch(const std::string& name, const std::string& dest) {
    return c().RunAsServiceUser({Agent(), "wal-fetch", "--config", c().info().agent_config_path, name, dest});
  }
  // A copy of an archived segment in the scratch dir, under name, optionally altered.
  std::string CopyOfSegment(const std::string& seg, const std::string& name,
                            const std::function<void(std::string&)>& alter = nullptr) {
    std::string content = ReadFile(JoinPath(Archive(), seg));
    if (alter) alter(content);
    std::string path = JoinPath(scratch_, name);
    AtomicWriteFile(path, content, 0644);
    ChownTree(path, c().info().os_user);
    return path;
  }

  static TestCluster* cluster_;
  std::string scratch_;
};

TestCluster* WalArchive::cluster_ = nullptr;

TEST_F(WalArchive, sandbox_archive_command_archives_a_switched_segment_and_records_the_system) {
  std::string seg = SwitchAndWaitArchived();
  EXPECT_TRUE(WaitUntil([&] { return c().Scalar("SELECT last_archived_wal FROM pg_stat_archiver") >= seg; }, 30s));
  EXPECT_EQ(c().Scalar("SELECT failed_count FROM pg_stat_archiver"), "0") << c().ServerLog();
  auto meta = nlohmann::json::parse(ReadFile(JoinPath(Archive(), "archive.json")));
  EXPECT_EQ(meta.at("system_identifier"), c().Scalar("SELECT system_identifier::text FROM pg_control_system()"));
  for (const auto& e : std::filesystem::directory_iterator(Archive()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(WalArchive, pushing_an_archived_segment_again_with_identical_content_exits_0) {
  std::string seg = SwitchAndWaitArchived();
  auto r = Push(CopyOfSegment(seg, seg));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(WalArchive, pushing_different_content_under_an_archived_name_fails_naming_the_file) {
  std::string seg = SwitchAndWaitArchived();
  std::string before = ReadFile(JoinPath(Archive(), seg));
  auto r = Push(CopyOfSegment(seg, seg, [](std::string& s) { s[s.size() / 2] ^= 0x5A; }));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(seg), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("different content"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFile(JoinPath(Archive(), seg)), before) << "the archived segment was overwritten";
}

TEST_F(WalArchive, segment_with_a_foreign_system_identifier_is_refused) {
  std::string seg = SwitchAndWaitArchived();
  const std::string name = "0000000100000000000000FE";  // never archived: far ahead of the cluster
  std::string path = CopyOfSegment(seg, name, [](std::string& s) {
    uint64_t sysid;
    memcpy(&sysid, &s[24], sizeof sysid);  // xlp_sysid in the long page header
    sysid ^= 0x1234;
    memcpy(&s[24], &sysid, sizeof sysid);
  });
  auto r = Push(path);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(name), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("belongs to database system"), std::string::npos) << r.err;
  EXPECT_FALSE(PathExists(JoinPath(Archive(), name)));
}

TEST_F(WalArchive, fetching_a_missing_segment_exits_1) {
  SwitchAndWaitArchived();
  auto r = Fetch("0000000100000000000000FF", JoinPath(scratch_, "RECOVERYXLOG"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not in the archive"), std::string::npos) << r.err;
}

TEST_F(WalArchive, fetch_round_trip_is_byte_identical) {
  std::string seg = SwitchAndWaitArchived();
  std::string dest = JoinPath(scratch_, "RECOVERYXLOG");
  auto r = Fetch(seg, dest);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadFile(dest) == ReadFile(JoinPath(Archive(), seg)));
}

TEST(WalRetention, a_snapshot_prunes_the_archived_wal_that_no_kept_snapshot_needs) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  const std::string archive = c.info().agent_config.wal_archive_dir;
  auto segments = [&] {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(archive)) {
      std::string name = e.path().filename().string();
      if (name.size() == 24 && name.find('.') == std::string::npos) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  for (int i = 0; i < 3; ++i)
    c.Exec("CREATE TABLE wal_" + std::to_string(i) + " AS SELECT 1; SELECT pg_switch_wal()");
  ASSERT_TRUE(WaitUntil([&] { return segments().size() >= 3; }, 60s)) << segments().size();
  std::string oldest_before = segments().front();

  int64_t id = InsertUpgrade(c, "hstore", "1.4", "1.8", {"1.4", "1.8"}, "snapshotting");
  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "succeeded") << job.error;
  std::string start_segment =
      c.Scalar("SELECT pg_walfile_name($1::pg_lsn)", {job.result.value("backup_start_lsn", "")});
  EXPECT_NE(job.EventText().find("archived WAL file(s)"), std::string::npos) << job.EventText();
  auto after = segments();
  ASSERT_FALSE(after.empty());
  EXPECT_GT(after.front(), oldest_before);
  for (const auto& name : after)
    EXPECT_GE(name.substr(8), start_segment.substr(8)) << name << " should be pruned";
  // The snapshot's own start segment stays: a rollback replays from there.
  EXPECT_TRUE(PathExists(JoinPath(archive, start_segment)) ||
              WaitUntil([&] { return PathExists(JoinPath(archive, start_segment)); }, 30s))
      << start_segment;
}

}  // namespace
}  // namespace safe_upgrade::testing
