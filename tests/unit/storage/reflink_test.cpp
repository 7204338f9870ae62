// Unit tests of the reflink snapshot's pure parts: the snapshot_method setting, what the copy
// leaves out (as pg_basebackup does), unlogged relations, and the probe's reasons.
#include "storage/reflink.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <vector>

#include "base/config.h"
#include "base/fs_util.h"
#include "storage/reflink_copy.h"
#include "temp_dir.h"

namespace safe_upgrade {
namespace {

std::string Toml(const std::string& extra) {
  return "[cluster]\ndata_directory = \"/tmp\"\n[agent]\nlisten = \"unix:/tmp/a.sock\"\nsnapshot_dir = "
         "\"/tmp/s\"\n"
         "wal_archive_dir = \"/tmp/w\"\n" +
         extra;
}

// The agent section's line is refused with a ConfigError that names the key and the bad value.
void ExpectRefused(const std::string& line, const std::string& key, const std::string& value) {
  try {
    ParseAgentConfig(Toml(line + "\n"));
    FAIL() << "expected ConfigError for " << line;
  } catch (const ConfigError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(key), std::string::npos) << what;
    EXPECT_NE(what.find(value), std::string::npos) << what;
  }
}

TEST(SnapshotMethodConfig, defaults_to_auto_and_round_trips_through_render) {
  AgentConfig c = ParseAgentConfig(Toml(""));
  EXPECT_EQ(c.snapshot_method, "auto");
  c.snapshot_method = "reflink";
  EXPECT_EQ(ParseAgentConfig(RenderAgentConfig(c)).snapshot_method, "reflink");
}

TEST(SnapshotMethodConfig, the_backup_checkpoint_is_fast_or_spread_and_round_trips) {
  AgentConfig c = ParseAgentConfig(Toml(""));
  EXPECT_EQ(c.backup_checkpoint, "fast");
  c.backup_checkpoint = "spread";
  EXPECT_EQ(ParseAgentConfig(RenderAgentConfig(c)).backup_checkpoint, "spread");
  ExpectRefused("backup_checkpoint = \"lazy\"", "agent.backup_checkpoint", "lazy");
}

TEST(SnapshotMethodConfig, an_unknown_method_is_refused_naming_the_key) {
  ExpectRefused("snapshot_method = \"zfs\"", "agent.snapshot_method", "zfs");
}

TEST(SnapshotMethodConfig, a_method_of_the_wrong_type_is_refused_naming_the_key) {
  try {
    ParseAgentConfig(Toml("snapshot_method = 1\n"));
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("agent.snapshot_method"), std::string::npos) << e.what();
  }
}

TEST(BackupCopyRule, leaves_out_what_pg_basebackup_leaves_out) {
  for (const char* f :
       {"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
        "postgresql.auto.conf.tmp", "current_logfiles.tmp", "backup_label.old"})
    EXPECT_EQ(BackupCopyRule(f, false), CopyRule::kSkip) << f;
  for (const char* d : {"pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial",
                        "pg_snapshots", "pg_subtrans"})
    EXPECT_EQ(BackupCopyRule(d, true), CopyRule::kEmptyDirectory) << d;
  EXPECT_EQ(BackupCopyRule("base/5/pgsql_tmp", true), CopyRule::kSkip);
  EXPECT_EQ(BackupCopyRule("base/pgsql_tmp/pgsql_tmp123.0", false), CopyRule::kSkip);
  EXPECT_EQ(BackupCopyRule("base/5/pg_internal.init", false), CopyRule::kSkip);
  EXPECT_EQ(BackupCopyRule("global/pg_internal.init.123", false), CopyRule::kSkip);
}

TEST(BackupCopyRule, keeps_the_cluster_s_files_and_nested_names_that_only_look_excluded) {
  for (const char* f : {"PG_VERSION", "postgresql.conf", "postgresql.auto.conf", "pg_hba.conf",
                        "global/pg_control", "base/5/16384", "base/5/16384_fsm", "pg_xact/0000",
                        "pg_multixact/offsets/0000", "base/5/postmaster.pid"})
    EXPECT_EQ(BackupCopyRule(f, false), CopyRule::kCopy) << f;
  for (const char* d : {"base", "global", "pg_xact", "pg_multixact", "pg_logical", "pg_stat", "base/pg_wal"})
    EXPECT_EQ(BackupCopyRule(d, true), CopyRule::kCopy) << d;
}

TEST(UnloggedFiles, every_fork_and_segment_of_a_relation_with_an_init_fork_except_the_init_fork) {
  std::vector<std::string> names = {"100",     "100_fsm", "100_vm",     "100.1",    "100_init", "200",
                                    "200_fsm", "200.1",   "PG_VERSION", "300_init", "300",      "3000"};
  std::set<std::string> skip = UnloggedFilesToSkip(names);
  EXPECT_EQ(skip, (std::set<std::string>{"100", "100_fsm", "100_vm", "100.1", "300"}));
  EXPECT_TRUE(UnloggedFilesToSkip({"1", "2_fsm", "3.1"}).empty());
}

TEST(SnapshotMethodChoice, auto_uses_reflink_when_possible_and_says_why_it_falls_back) {
  auto yes = ResolveSnapshotMethod("auto", "");
  EXPECT_EQ(yes.method, "reflink");
  EXPECT_TRUE(yes.possible);
  auto no = ResolveSnapshotMethod("auto", "the filesystem does not clone extents: Operation not supported");
  EXPECT_EQ(no.method, "basebackup");
  EXPECT_TRUE(no.possible);
  EXPECT_NE(no.reason.find("Operation not supported"), std::string::npos) << no.reason;
}

TEST(SnapshotMethodChoice, reflink_that_cannot_be_had_is_impossible_and_basebackup_never_probes) {
  auto no = ResolveSnapshotMethod("reflink", "agent.snapshot_dir (/s) is on another filesystem");
  EXPECT_EQ(no.method, "reflink");
  EXPECT_FALSE(no.possible);
  EXPECT_NE(no.reason.find("agent.snapshot_method is \"reflink\""), std::string::npos) << no.reason;
  EXPECT_NE(no.reason.find("another filesystem"), std::string::npos) << no.reason;
  auto bb = ResolveSnapshotMethod("basebackup", "anything");
  EXPECT_EQ(bb.method, "basebackup");
  EXPECT_TRUE(bb.possible);
}

TEST(SameFilesystemRefusal, names_the_first_directory_on_another_filesystem) {
  EXPECT_EQ(SameFilesystemRefusal({{"the data directory", "/d", 7}, {"agent.snapshot_dir", "/s", 7}}), "");
  std::string r = SameFilesystemRefusal(
      {{"the data directory", "/d", 7}, {"agent.snapshot_dir", "/s", 7}, {"tablespace 16384", "/t", 9}});
  EXPECT_NE(r.find("tablespace 16384 (/t) is on another filesystem than the data directory (/d)"),
            std::string::npos)
      << r;
  EXPECT_NE(SameFilesystemRefusal({{"the data directory", "/d", 7}, {"agent.snapshot_dir", "/gone", 0}})
                .find("cannot be reached"),
            std::string::npos);
}

TEST(SnapshotExtraBytes, basebackup_needs_the_cluster_and_reflink_a_small_share_of_it) {
  const uint64_t gb = 1ull << 30, seg = 16ull << 20;
  EXPECT_EQ(SnapshotExtraBytes("basebackup", 16 * gb, seg), 16 * gb);
  EXPECT_EQ(SnapshotExtraBytes("reflink", 16 * gb, seg), 4 * seg + 16 * gb / 200);
  EXPECT_LT(SnapshotExtraBytes("reflink", 16 * gb, seg), 16 * gb / 20);
}

class ReflinkProbe : public TempDirTest {};

// /tmp here is not a filesystem that clones extents (ext4, tmpfs, overlay): the probe says so.
TEST_F(ReflinkProbe, a_filesystem_that_cannot_clone_is_refused_with_the_system_s_reason) {
  std::string data = JoinPath(root_, "data"), snaps = JoinPath(root_, "snapshots");
  EnsureDir(data);
  EnsureDir(snaps);
  AtomicWriteFile(JoinPath(data, "PG_VERSION"), "15\n");
  AgentConfig c = ParseAgentConfig(Toml(""));
  c.data_directory = data;
  c.snapshot_dir = snaps;
  c.work_dir = JoinPath(root_, "work");
  std::string refusal = ReflinkRefusal(c);
  if (refusal.empty()) GTEST_SKIP() << root_ << " is on a filesystem that clones extents";
  EXPECT_NE(refusal.find("FICLONE"), std::string::npos) << refusal;
  EXPECT_FALSE(CopiesShareExtents(data, snaps));
  c.snapshot_method = "auto";
  EXPECT_EQ(ChooseSnapshotMethod(c).method, "basebackup");
  c.snapshot_method = "reflink";
  EXPECT_FALSE(ChooseSnapshotMethod(c).possible);
  // The probe leaves nothing behind.
  EXPECT_TRUE(std::filesystem::is_empty(snaps));
}

}  // namespace
}  // namespace safe_upgrade
