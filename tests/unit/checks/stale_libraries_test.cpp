// Reading /proc/PID/maps for replaced libraries: which lines count, deleted and replaced files, and
// matching PostgreSQL's library names; and, on this host, a file renamed over while mapped.
#include "checks/stale_libraries.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/fs_util.h"
#include "temp_dir.h"

namespace safe_upgrade {
namespace {

// Everything on disk is the file that was mapped, except inode 999.
bool SameUnlessInode999(const std::string&, const std::string&, unsigned long long inode) { return inode != 999; }

TEST(StaleMappingsIn, names_deleted_and_replaced_shared_objects_once_per_path) {
  const std::string maps =
      "55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /usr/lib/postgresql/15/bin/postgres\n"
      "7f0000000000-7f0000010000 r--p 00000000 fd:01 2001 /usr/lib/postgresql/15/lib/postgis-3.so (deleted)\n"
      "7f0000010000-7f0000020000 r-xp 00010000 fd:01 2001 /usr/lib/postgresql/15/lib/postgis-3.so (deleted)\n"
      "7f0000020000-7f0000030000 r--p 00000000 fd:01 999 /tmp/my dir/su_fixture_stalelib.so\n"
      "7f0000030000-7f0000040000 r--p 00000000 fd:01 3003 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
      "7f0000040000-7f0000050000 rw-p 00000000 00:00 0 \n"
      "7f0000050000-7f0000060000 rw-s 00000000 00:05 77 /dev/shm/PostgreSQL.1 (deleted)\n"
      "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n";
  auto stale = StaleMappingsIn(42, maps, &SameUnlessInode999);
  ASSERT_EQ(stale.size(), 2u);
  EXPECT_EQ(stale[0].path, "/tmp/my dir/su_fixture_stalelib.so");
  EXPECT_EQ(stale[0].reason, "replaced");
  EXPECT_EQ(stale[1].path, "/usr/lib/postgresql/15/lib/postgis-3.so");
  EXPECT_EQ(stale[1].reason, "deleted");
  EXPECT_EQ(stale[1].pid, 42);
}

TEST(IsOneOfLibraries, matches_by_file_name_with_so_added_when_the_name_has_no_suffix) {
  std::set<std::string> libraries = {"$libdir/postgis-3", "su_fixture_stalelib", "/opt/x/plugin.so.1"};
  EXPECT_TRUE(IsOneOfLibraries("/usr/lib/postgresql/15/lib/postgis-3.so", libraries));
  EXPECT_TRUE(IsOneOfLibraries("/tmp/d/su_fixture_stalelib.so", libraries));
  EXPECT_TRUE(IsOneOfLibraries("/elsewhere/plugin.so.1", libraries));
  EXPECT_FALSE(IsOneOfLibraries("/usr/lib/postgresql/15/lib/postgis_raster-3.so", libraries));
  EXPECT_FALSE(IsOneOfLibraries("/usr/lib/postgresql/15/lib/postgis-3.so.bak", libraries));
  // A name with dots in it still gets ".so", as PostgreSQL's loader adds it.
  EXPECT_TRUE(IsOneOfLibraries("/usr/lib/postgresql/15/lib/timescaledb-2.11.1.so", {"$libdir/timescaledb-2.11.1"}));
}

TEST(StaleLibrariesByPath, lists_the_systems_own_libraries_last_and_caps_the_pids) {
  auto grouped = StaleLibrariesByPath({{1, "/lib/x86_64-linux-gnu/libc.so.6", "deleted"},
                                       {2, "/lib/x86_64-linux-gnu/libc.so.6", "deleted"},
                                       {3, "/lib/x86_64-linux-gnu/libc.so.6", "deleted"},
                                       {1, "/usr/lib64/libssl.so.3", "deleted"},
                                       {1, "/usr/pgsql-15/lib/postgis-3.so", "replaced"},
                                       {1, "/usr/lib/postgresql/15/lib/postgis-3.so", "replaced"}},
                                      2);
  ASSERT_EQ(grouped.size(), 4u);
  EXPECT_EQ(grouped[0]["path"], "/usr/lib/postgresql/15/lib/postgis-3.so");
  EXPECT_EQ(grouped[1]["path"], "/usr/pgsql-15/lib/postgis-3.so");
  EXPECT_EQ(grouped[2]["path"], "/lib/x86_64-linux-gnu/libc.so.6");
  EXPECT_EQ(grouped[2]["pids"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(grouped[2]["pid_count"], 3);
  EXPECT_EQ(grouped[3]["path"], "/usr/lib64/libssl.so.3");
}

TEST(StaleLibrariesByPath, groups_the_pids_of_each_file) {
  auto grouped = StaleLibrariesByPath({{1, "/l/a.so", "deleted"}, {2, "/l/a.so", "deleted"}, {2, "/l/b.so", "replaced"}});
  ASSERT_EQ(grouped.size(), 2u);
  EXPECT_EQ(grouped[0]["library"], "a.so");
  EXPECT_EQ(grouped[0]["pids"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(grouped[1]["reason"], "replaced");
}

// The real thing on this host: this process maps a copy of a library, the copy is replaced by a
// file renamed over it (as dpkg does), and this process's own maps show it.
class FindStaleLibrariesOnThisHost : public TempDirTest {};

TEST_F(FindStaleLibrariesOnThisHost, sees_a_library_this_process_mapped_and_that_was_renamed_over) {
  std::string lib;
  for (const char* candidate : {"/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"})
    if (PathExists(candidate)) lib = candidate;
  if (lib.empty()) GTEST_SKIP() << "libz.so.1 is not installed, so there is no library to map";
  std::string copy = JoinPath(root_, "su_stale_test.so");
  std::filesystem::copy_file(lib, copy);
  void* handle = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  auto before = safe_upgrade::FindStaleLibraries({getpid()});
  for (const auto& m : before) EXPECT_NE(m.path, copy) << "not replaced yet";
  std::filesystem::copy_file(lib, copy + ".new");
  std::filesystem::rename(copy + ".new", copy);
  auto after = safe_upgrade::FindStaleLibraries({getpid()});
  bool seen = false;
  for (const auto& m : after)
    if (m.path == copy) seen = m.reason == "deleted" || m.reason == "replaced";
  EXPECT_TRUE(seen) << "the renamed-over copy is not reported";
  dlclose(handle);
}

class ServerProcessesOf : public TempDirTest {};

TEST_F(ServerProcessesOf, is_empty_without_a_running_postmaster) {
  EXPECT_TRUE(safe_upgrade::ServerProcesses(root_).empty());
  AtomicWriteFile(JoinPath(root_, "postmaster.pid"), "999999999\n/data\n");
  EXPECT_TRUE(safe_upgrade::ServerProcesses(root_).empty());
}

}  // namespace
}  // namespace safe_upgrade
