// Unit tests of SyncTree, the flush that makes a copied data directory durable before production
// relies on it: it walks every subdirectory and fails loudly on what it cannot sync. (A real
// power loss cannot be simulated here; these check that every file is reached and errors surface.)
#include "base/fs_util.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "temp_dir.h"

namespace safe_upgrade {
namespace {

namespace fs = std::filesystem;

class SyncTreeTest : public TempDirTest {};

TEST_F(SyncTreeTest, syncs_every_file_and_directory_of_nested_subdirectories) {
  EnsureDir(JoinPath(root_, "base/1"), 0755);
  EnsureDir(JoinPath(root_, "pg_wal/archive_status"), 0755);
  AtomicWriteFile(JoinPath(root_, "PG_VERSION"), "15\n");
  AtomicWriteFile(JoinPath(root_, "base/1/1259"), std::string(8192, 'x'));
  AtomicWriteFile(JoinPath(root_, "base/1/1259_fsm"), "y");
  AtomicWriteFile(JoinPath(root_, "pg_wal/000000010000000000000001"), "z");
  SyncStats stats = SyncTree(root_);
  EXPECT_EQ(stats.files, 4u);
  // root, base, base/1, pg_wal, pg_wal/archive_status
  EXPECT_EQ(stats.directories, 5u);
}

TEST_F(SyncTreeTest, follows_a_linked_directory_like_pg_wal_elsewhere) {
  std::string elsewhere = root_ + "-wal";
  EnsureDir(elsewhere, 0755);
  AtomicWriteFile(JoinPath(elsewhere, "000000010000000000000001"), "z");
  EnsureDir(JoinPath(root_, "data"), 0755);
  fs::create_directory_symlink(elsewhere, JoinPath(root_, "data/pg_wal"));
  SyncStats stats = SyncTree(JoinPath(root_, "data"));
  fs::remove_all(elsewhere);
  EXPECT_EQ(stats.files, 1u);
}

TEST_F(SyncTreeTest, a_dangling_link_is_an_error_naming_it) {
  fs::create_directory_symlink(JoinPath(root_, "missing"), JoinPath(root_, "pg_tblspc_link"));
  try {
    SyncTree(root_);
    FAIL() << "a dangling link was skipped";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("pg_tblspc_link"), std::string::npos) << e.what();
  }
}

TEST_F(SyncTreeTest, an_unreadable_file_is_an_error_naming_it) {
  EnsureDir(JoinPath(root_, "base"), 0755);
  std::string secret = JoinPath(root_, "base/16384");
  AtomicWriteFile(secret, "x", 0000);
  if (geteuid() != 0) {
    EXPECT_THROW(SyncTree(root_), std::runtime_error);
    return;
  }
  // Root opens any file: check as an unprivileged user in a child process.
  const passwd* nobody = getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user nobody to drop privileges to";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(nobody->pw_gid) != 0 || setuid(nobody->pw_uid) != 0) _exit(3);
    try {
      SyncTree(root_);
      _exit(1);
    } catch (const std::runtime_error& e) {
      _exit(std::string(e.what()).find("16384") != std::string::npos ? 0 : 2);
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error raised, 2: the error did not name the file";
}

}  // namespace
}  // namespace safe_upgrade
