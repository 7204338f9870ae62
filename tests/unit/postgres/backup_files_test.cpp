// Unit tests of the snapshot job's parsing of pg_basebackup progress, backup_label and
// backup_manifest text (as PostgreSQL 15 writes them), and of snapshot retention's choices on a
// scratch snapshot directory.
#include "postgres/backup_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "postgres/catalog.h"
#include "snapshots/retention.h"

namespace safe_upgrade {
namespace {

TEST(SnapshotParse, progress_line_gives_done_total_and_percent) {
  auto p = ParseBasebackupProgress("  22742/45484 kB (50%), 0/1 tablespace");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->done_kb, 22742u);
  EXPECT_EQ(p->total_kb, 45484u);
  EXPECT_EQ(p->percent, 50);
  auto verbose =
      ParseBasebackupProgress("45484/45484 kB (100%), 1/1 tablespace (...data.partial/global/pg_control)");
  ASSERT_TRUE(verbose);
  EXPECT_EQ(verbose->percent, 100);
}

TEST(SnapshotParse, other_stderr_lines_are_not_progress) {
  EXPECT_FALSE(ParseBasebackupProgress("pg_basebackup: error: could not connect to server"));
  EXPECT_FALSE(ParseBasebackupProgress("WARNING:  skipping special file \"./foo\""));
  EXPECT_FALSE(ParseBasebackupProgress(""));
}

TEST(SnapshotParse, backup_label_gives_start_lsn_and_timeline) {
  auto f = ParseBackupLabel(
      "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
      "CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
      "START TIME: 2024-05-01 10:00:00 UTC\nLABEL: safe-upgrade snap-1\nSTART TIMELINE: 3\n");
  EXPECT_EQ(f.start_lsn, "0/2000028");
  EXPECT_EQ(f.timeline, 3u);
  EXPECT_THROW(ParseBackupLabel("LABEL: x\n"), std::runtime_error);
}

TEST(SnapshotParse, manifest_stop_lsn_is_the_end_of_the_newest_wal_range) {
  std::string manifest = R"({ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
    "WAL-Ranges": [
      { "Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "0/3000138" },
      { "Timeline": 1, "Start-LSN": "0/2FFFF28", "End-LSN": "0/3000000" }
    ], "Manifest-Checksum": "x" })";
  EXPECT_EQ(ParseManifestStopLsn(manifest), "0/3000138");
  EXPECT_THROW(ParseManifestStopLsn(R"({"Files": []})"), std::runtime_error);
}

TEST(SnapshotParse, lsn_ordering_follows_both_halves) {
  EXPECT_LT(ParseLsn("0/FFFFFFFF"), ParseLsn("1/0"));
  EXPECT_EQ(ParseLsn("1/2000028"), (1ULL << 32) | 0x2000028);
  EXPECT_THROW(ParseLsn("nonsense"), std::runtime_error);
}

class RetentionUnit : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/su-retention-XXXXXX";
    config_.snapshot_dir = mkdtemp(tmpl);
  }
  void TearDown() override { RemoveTree(config_.snapshot_dir); }
  void MakeSnapshot(int64_t id, const std::string& created_at) {
    std::string snap = SnapshotIdFor(id);
    EnsureDir(SnapshotDataDir(config_, snap));
    AtomicWriteFile(
        SnapshotMetaPath(config_, snap),
        nlohmann::json{{"snapshot_id", snap}, {"created_at", created_at}, {"verified", true}}.dump());
  }
  std::vector<std::string> Ids() {
    std::vector<std::string> out;
    for (const auto& s : ListSnapshots(config_)) out.push_back(s.id);
    return out;
  }
  AgentConfig config_;
};

TEST_F(RetentionUnit, oldest_snapshots_go_first_down_to_the_limit) {
  config_.snapshot_retention = 2;
  MakeSnapshot(10, "2024-01-03T00:00:00.000Z");
  MakeSnapshot(2, "2024-01-01T00:00:00.000Z");
  MakeSnapshot(7, "2024-01-02T00:00:00.000Z");
  MakeSnapshot(11, "2024-01-04T00:00:00.000Z");
  auto outcome = ApplySnapshotRetention(config_, {}, "snap-11");
  EXPECT_EQ(outcome.removed, (std::vector<std::string>{"snap-2", "snap-7"}));
  EXPECT_EQ(Ids(), (std::vector<std::string>{"snap-10", "snap-11"}));
}

TEST_F(RetentionUnit, snapshot_of_an_in_flight_upgrade_is_never_removed) {
  config_.snapshot_retention = 1;
  MakeSnapshot(1, "2024-01-01T00:00:00.000Z");
  MakeSnapshot(2, "2024-01-02T00:00:00.000Z");
  MakeSnapshot(3, "2024-01-03T00:00:00.000Z");
  auto outcome = ApplySnapshotRetention(config_, {1}, "snap-3");
  EXPECT_EQ(outcome.removed, (std::vector<std::string>{"snap-2"}));
  EXPECT_EQ(Ids(), (std::vector<std::string>{"snap-1", "snap-3"}));
}

TEST_F(RetentionUnit, interrupted_removal_is_finished_and_foreign_entries_are_left_alone) {
  config_.snapshot_retention = 3;
  MakeSnapshot(1, "2024-01-01T00:00:00.000Z");
  EnsureDir(JoinPath(config_.snapshot_dir, "snap-5.removing"));
  EnsureDir(JoinPath(config_.snapshot_dir, "operator-notes"));
  ApplySnapshotRetention(config_, {}, "snap-1");
  EXPECT_FALSE(PathExists(JoinPath(config_.snapshot_dir, "snap-5.removing")));
  EXPECT_TRUE(PathExists(JoinPath(config_.snapshot_dir, "operator-notes")));
  EXPECT_EQ(Ids(), (std::vector<std::string>{"snap-1"}));
}

}  // namespace
}  // namespace safe_upgrade
