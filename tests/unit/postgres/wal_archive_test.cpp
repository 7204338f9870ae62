// Unit tests of wal-push / wal-fetch on a scratch archive, with synthetic WAL segments whose long
// page header carries a chosen system identifier. No server: archive.json is written up front,
// so the archive's system identifier never has to be read from a cluster.
#include "postgres/wal_archive.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "base/config.h"
#include "base/fs_util.h"

namespace safe_upgrade {
namespace {

constexpr uint64_t kArchiveSysid = 7123456789012345678ULL;
constexpr uint32_t kSegSize = 1024 * 1024;  // the smallest segment size initdb allows

// A segment whose first page has PostgreSQL 15's long header (see wal_archive.cpp for the layout).
std::string SyntheticSegment(uint64_t sysid, char fill = 'x', uint16_t magic = 0xD110,
                             uint64_t pageaddr = 0) {
  std::string seg(kSegSize, fill);
  uint16_t info = 0x0002;  // XLP_LONG_HEADER
  uint32_t tli = 1, rem_len = 0, pad = 0, blcksz = 8192, seg_size = kSegSize;
  memcpy(&seg[0], &magic, 2);
  memcpy(&seg[2], &info, 2);
  memcpy(&seg[4], &tli, 4);
  memcpy(&seg[8], &pageaddr, 8);
  memcpy(&seg[16], &rem_len, 4);
  memcpy(&seg[20], &pad, 4);
  memcpy(&seg[24], &sysid, 8);
  memcpy(&seg[32], &seg_size, 4);
  memcpy(&seg[36], &blcksz, 4);
  return seg;
}

class WalArchiveUnit : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/su-walunit-XXXXXX";
    dir_ = mkdtemp(tmpl);
    config_.wal_archive_dir = JoinPath(dir_, "archive");
    config_.data_directory = JoinPath(dir_, "nonexistent-data");  // never read: archive.json exists
    EnsureDir(config_.wal_archive_dir);
    EnsureDir(JoinPath(dir_, "src"));
    AtomicWriteFile(JoinPath(config_.wal_archive_dir, "archive.json"),
                    nlohmann::json{{"system_identifier", std::to_string(kArchiveSysid)}}.dump());
  }
  void TearDown() override { RemoveTree(dir_); }

  std::string Source(const std::string& name, const std::string& content) {
    std::string path = JoinPath(JoinPath(dir_, "src"), name);
    AtomicWriteFile(path, content);
    return path;
  }
  std::string Archived(const std::string& name) { return JoinPath(config_.wal_archive_dir, name); }
  // Why the rollback proof refuses the range ("" when it passes).
  std::string ProofFailure(uint32_t timeline, uint64_t from_lsn, uint64_t to_lsn) {
    try {
      ProveWalArchiveCovers(config_, kArchiveSysid, timeline, from_lsn, to_lsn);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  int Push(const std::string& path, std::string* err = nullptr) {
    ::testing::internal::CaptureStderr();
    int rc = WalPush(config_, path);
    std::string e = ::testing::internal::GetCapturedStderr();
    if (err) *err = e;
    return rc;
  }
  int Fetch(const std::string& name, const std::string& dest, std::string* err = nullptr) {
    ::testing::internal::CaptureStderr();
    int rc = WalFetch(config_, name, dest);
    std::string e = ::testing::internal::GetCapturedStderr();
    if (err) *err = e;
    return rc;
  }
  std::vector<std::string> ArchiveFiles() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(config_.wal_archive_dir))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
  AgentConfig config_;
};

const char* kSeg = "000000010000000000000003";

TEST_F(WalArchiveUnit, push_stores_the_segment_byte_identical_and_leaves_no_temporary_file) {
  std::string seg = SyntheticSegment(kArchiveSysid);
  ASSERT_EQ(Push(Source(kSeg, seg)), 0);
  EXPECT_EQ(ReadFile(Archived(kSeg)), seg);
  EXPECT_EQ(ArchiveFiles(), (std::vector<std::string>{kSeg, "archive.json"}));
}

TEST_F(WalArchiveUnit, pushing_the_same_segment_again_with_identical_content_succeeds) {
  std::string path = Source(kSeg, SyntheticSegment(kArchiveSysid));
  ASSERT_EQ(Push(path), 0);
  std::string err;
  EXPECT_EQ(Push(path, &err), 0) << err;
}

TEST_F(WalArchiveUnit, pushing_different_content_under_an_archived_name_fails_naming_the_file) {
  ASSERT_EQ(Push(Source(kSeg, SyntheticSegment(kArchiveSysid, 'a'))), 0);
  std::string other = SyntheticSegment(kArchiveSysid, 'b');
  std::string err;
  EXPECT_NE(Push(Source(kSeg, other), &err), 0);
  EXPECT_NE(err.find(kSeg), std::string::npos) << err;
  EXPECT_NE(err.find("different content"), std::string::npos) << err;
  EXPECT_EQ(ReadFile(Archived(kSeg)), SyntheticSegment(kArchiveSysid, 'a'))
      << "the archived file was overwritten";
}

TEST_F(WalArchiveUnit, segment_of_another_database_system_is_refused) {
  std::string err;
  EXPECT_NE(Push(Source(kSeg, SyntheticSegment(kArchiveSysid + 1)), &err), 0);
  EXPECT_NE(err.find(std::to_string(kArchiveSysid + 1)), std::string::npos) << err;
  EXPECT_NE(err.find(std::to_string(kArchiveSysid)), std::string::npos) << err;
  EXPECT_FALSE(PathExists(Archived(kSeg)));
}

TEST_F(WalArchiveUnit, file_without_a_postgresql_15_page_header_is_refused_as_a_segment) {
  std::string err;
  EXPECT_NE(Push(Source(kSeg, SyntheticSegment(kArchiveSysid, 'x', 0xD10D)), &err), 0);
  EXPECT_NE(err.find("not a PostgreSQL 15 WAL segment"), std::string::npos) << err;
  EXPECT_NE(Push(Source(kSeg, "short"), &err), 0);
  EXPECT_NE(err.find("too short"), std::string::npos) << err;
  EXPECT_FALSE(PathExists(Archived(kSeg)));
}

TEST_F(WalArchiveUnit, truncated_segment_is_refused) {
  std::string seg = SyntheticSegment(kArchiveSysid);
  seg.resize(seg.size() / 2);
  std::string err;
  EXPECT_NE(Push(Source(kSeg, seg), &err), 0);
  EXPECT_NE(err.find("segment size"), std::string::npos) << err;
}

TEST_F(WalArchiveUnit, history_partial_and_backup_files_are_pushed_and_fetched_as_is) {
  for (std::string name :
       {"00000002.history", "000000010000000000000004.partial", "000000010000000000000003.00000028.backup"}) {
    std::string content = "content of " + name + "\n";
    ASSERT_EQ(Push(Source(name, content)), 0) << name;
    std::string dest = JoinPath(dir_, "restored");
    ASSERT_EQ(Fetch(name, dest), 0) << name;
    EXPECT_EQ(ReadFile(dest), content) << name;
  }
}

TEST_F(WalArchiveUnit, names_postgresql_never_archives_are_refused) {
  std::string err;
  EXPECT_NE(Push(Source("postgresql.conf", "x"), &err), 0);
  EXPECT_NE(err.find("postgresql.conf"), std::string::npos) << err;
  EXPECT_NE(Fetch("../archive.json", JoinPath(dir_, "x"), &err), 0);
  EXPECT_NE(Fetch("archive.json", JoinPath(dir_, "x"), &err), 0);
  EXPECT_FALSE(PathExists(JoinPath(dir_, "x")));
}

TEST_F(WalArchiveUnit, fetching_a_missing_file_exits_1_with_a_short_message) {
  std::string err;
  EXPECT_EQ(Fetch("000000010000000000000009", JoinPath(dir_, "RECOVERYXLOG"), &err), 1);
  EXPECT_NE(err.find("not in the archive"), std::string::npos) << err;
  EXPECT_LT(err.size(), 200u);
  EXPECT_FALSE(PathExists(JoinPath(dir_, "RECOVERYXLOG")));
}

TEST_F(WalArchiveUnit, fetch_round_trip_is_byte_identical_and_replaces_the_destination) {
  std::string seg = SyntheticSegment(kArchiveSysid, 'q');
  ASSERT_EQ(Push(Source(kSeg, seg)), 0);
  std::string dest = JoinPath(dir_, "RECOVERYXLOG");
  AtomicWriteFile(dest, "stale");
  ASSERT_EQ(Fetch(kSeg, dest), 0);
  EXPECT_EQ(ReadFile(dest), seg);
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(WalArchiveUnit, missing_archive_directory_fails_the_push) {
  RemoveTree(config_.wal_archive_dir);
  std::string err;
  EXPECT_NE(Push(Source(kSeg, SyntheticSegment(kArchiveSysid)), &err), 0);
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}

// Segment n of timeline 1 (1 MB segments), written straight into the archive.
void PutSegment(const AgentConfig& config, uint32_t n, uint64_t sysid = kArchiveSysid,
                std::optional<uint64_t> pageaddr = std::nullopt) {
  std::string name = WalSegmentName(1, uint64_t{n} * kSegSize, kSegSize);
  AtomicWriteFile(JoinPath(config.wal_archive_dir, name),
                  SyntheticSegment(sysid, 'x', 0xD110, pageaddr.value_or(uint64_t{n} * kSegSize)));
}

TEST(WalSegmentNames, follow_postgresqls_naming_for_the_segment_size) {
  EXPECT_EQ(WalSegmentName(1, 0x0000000005000028ULL, 16 * 1024 * 1024), "000000010000000000000005");
  EXPECT_EQ(WalSegmentName(2, 0x00000001FF000000ULL, 16 * 1024 * 1024), "0000000200000001000000FF");
  EXPECT_EQ(WalSegmentName(1, 3 * 1024 * 1024 + 17, 1024 * 1024), "000000010000000000000003");
}

TEST_F(WalArchiveUnit, the_rollback_proof_accepts_a_complete_range_and_names_the_first_gap) {
  for (uint32_t n : {2, 3, 4, 6}) PutSegment(config_, n);
  EXPECT_EQ(ProveWalArchiveCovers(config_, kArchiveSysid, 1, 2 * kSegSize + 40, 4 * kSegSize + 8), 3u);
  std::string gap = ProofFailure(1, 2 * kSegSize, 6 * kSegSize);
  EXPECT_NE(gap.find("000000010000000000000005 is not in the archive"), std::string::npos) << gap;
  // Another timeline's names are other files.
  EXPECT_THROW(ProveWalArchiveCovers(config_, kArchiveSysid, 2, 2 * kSegSize, 2 * kSegSize),
               std::runtime_error);
}

TEST_F(WalArchiveUnit, the_rollback_proof_refuses_another_clusters_or_a_misplaced_segment) {
  PutSegment(config_, 2);
  PutSegment(config_, 3, kArchiveSysid + 1);
  PutSegment(config_, 4, kArchiveSysid, uint64_t{9} * kSegSize);
  std::string foreign = ProofFailure(1, 2 * kSegSize, 3 * kSegSize);
  EXPECT_NE(foreign.find("not to this cluster"), std::string::npos) << foreign;
  std::string misplaced = ProofFailure(1, 4 * kSegSize, 4 * kSegSize);
  EXPECT_NE(misplaced.find("does not start where its name says"), std::string::npos) << misplaced;
}

TEST_F(WalArchiveUnit, the_rollback_proof_of_an_empty_archive_says_nothing_was_archived) {
  std::string empty = ProofFailure(1, 0, kSegSize);
  EXPECT_NE(empty.find("holds no WAL segment at all"), std::string::npos) << empty;
}

TEST_F(WalArchiveUnit, pruning_removes_only_segments_before_the_oldest_needed_and_keeps_history_files) {
  for (uint32_t n : {1, 2, 3, 4}) PutSegment(config_, n);
  AtomicWriteFile(Archived("000000010000000000000002.00000028.backup"), "backup label");
  AtomicWriteFile(Archived("00000002.history"), "1\t0/3000000\tbefore\n");
  AtomicWriteFile(Archived("000000020000000000000002.partial"), SyntheticSegment(kArchiveSysid));
  auto outcome = PruneWalArchive(config_, 3 * kSegSize + 100);
  EXPECT_EQ(outcome.files, 4u);  // segments 1 and 2, the .backup of 2 and the .partial of 2
  EXPECT_FALSE(PathExists(Archived("000000010000000000000001")));
  EXPECT_FALSE(PathExists(Archived("000000010000000000000002")));
  EXPECT_FALSE(PathExists(Archived("000000010000000000000002.00000028.backup")));
  EXPECT_FALSE(PathExists(Archived("000000020000000000000002.partial")));
  EXPECT_TRUE(PathExists(Archived("000000010000000000000003")));
  EXPECT_TRUE(PathExists(Archived("000000010000000000000004")));
  EXPECT_TRUE(PathExists(Archived("00000002.history")));
  EXPECT_TRUE(PathExists(Archived("archive.json")));
  auto summary = SummarizeWalArchive(config_);
  EXPECT_EQ(summary.oldest_segment, "000000010000000000000003");
  EXPECT_EQ(summary.newest_file, "00000002.history");
  EXPECT_EQ(summary.files, 3u);
  EXPECT_EQ(summary.segment_bytes, kSegSize);
}

}  // namespace
}  // namespace safe_upgrade
