// Sessions on a replaced library: su_fixture_stalelib's library lives in a directory of the test on
// dynamic_library_path; sessions load build 1, the file is then replaced by build 2 the way a
// package upgrade replaces it (a new file renamed over the old one). plan() names those sessions
// before any copy is made; the apply names them before and after it commits; recycle_sessions
// "idle" terminates the idle one only, and the busy one keeps the old code (it cannot find the
// function 2.0 adds in the library it mapped).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "pg_errors.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kLibrary = "su_fixture_stalelib.so";

std::string PkgLibDir(const TestCluster& c) {
  return c.Scalar("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'");
}

// Where the cluster finds the fixture's library first: build 1 of it, in a directory of the test.
std::string InstallBuildOne(const TestCluster& c) {
  std::string dir = c.ScratchDir("libs");
  std::filesystem::copy_file(JoinPath(PkgLibDir(c), kLibrary), JoinPath(dir, kLibrary),
                             std::filesystem::copy_options::overwrite_existing);
  chmod(dir.c_str(), 0755);
  c.Exec("ALTER SYSTEM SET dynamic_library_path = '" + dir + ":$libdir'");
  c.Exec("SELECT pg_reload_conf()");
  EXPECT_TRUE(WaitUntil([&] { return c.Scalar("SHOW dynamic_library_path").rfind(dir, 0) == 0; }, 10s));
  return dir;
}

// What a package upgrade does: the new build written next to the old file and renamed over it.
void ReplaceWithBuildTwo(const TestCluster& c, const std::string& dir) {
  std::string next = JoinPath(dir, std::string(kLibrary) + ".dpkg-new");
  std::filesystem::copy_file(JoinPath(PkgLibDir(c), "su_fixture_stalelib_v2.so"), next);
  std::filesystem::rename(next, JoinPath(dir, kLibrary));
}

std::set<int> PidsIn(const json& sessions) {
  std::set<int> out;
  for (const auto& s : sessions) out.insert(s.value("pid", 0));
  return out;
}

struct StaleFixture {
  std::unique_ptr<PgConn> idle, busy, elsewhere;
  int idle_pid = 0, busy_pid = 0, elsewhere_pid = 0;
};

// Two sessions that ran build 1 (one idle, one idle in a transaction), then the file replaced.
// With in_other_database, a third one (idle) in database "other", which has the extension too.
StaleFixture SessionsOnAReplacedLibrary(const TestCluster& c, bool in_other_database = false) {
  if (!ExtensionAvailable(*c.Connect(), "su_fixture_stalelib"))
    throw std::runtime_error("su_fixture_stalelib is not installed (make check-install)");
  std::string dir = InstallBuildOne(c);
  c.Exec("CREATE EXTENSION su_fixture_stalelib VERSION '1.0'");
  StaleFixture f;
  f.idle = c.Connect();
  f.busy = c.Connect();
  EXPECT_EQ(f.idle->Exec("SELECT su_stalelib_build()").Scalar(), "1");
  EXPECT_EQ(f.busy->Exec("SELECT su_stalelib_build()").Scalar(), "1");
  f.busy->ExecScript("BEGIN; SELECT 1");
  f.idle_pid = f.idle->BackendPid();
  f.busy_pid = f.busy->BackendPid();
  if (in_other_database) {
    c.Exec("CREATE DATABASE other");
    f.elsewhere = c.Connect("other");
    f.elsewhere->ExecScript("CREATE EXTENSION su_fixture_stalelib VERSION '1.0'");
    EXPECT_EQ(f.elsewhere->Exec("SELECT su_stalelib_build()").Scalar(), "1");
    f.elsewhere_pid = f.elsewhere->BackendPid();
  }
  ReplaceWithBuildTwo(c, dir);
  return f;
}

// plan() as soon as the agent has seen the replaced file (it reads the maps every few seconds).
json PlanNamingBoth(const TestCluster& c, const StaleFixture& f) {
  json plan;
  WaitUntil(
      [&] {
        plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('su_fixture_stalelib', '2.0')::text"));
        auto pids = PidsIn(plan["stale_sessions"]);
        return pids.count(f.idle_pid) && pids.count(f.busy_pid);
      },
      60s, 250ms);
  return plan;
}

json Status(const TestCluster& c, int64_t id) {
  return json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}));
}

TEST(StaleLibrary, plan_names_the_sessions_on_the_replaced_library_and_recycle_idle_ends_only_the_idle_one) {
  TestCluster c;
  StaleFixture f = SessionsOnAReplacedLibrary(c);
  json plan = PlanNamingBoth(c, f);
  ASSERT_EQ(PidsIn(plan["stale_sessions"]), (std::set<int>{f.idle_pid, f.busy_pid})) << plan.dump(2);
  for (const auto& s : plan["stale_sessions"]) {
    EXPECT_EQ(s.value("library", ""), kLibrary);
    EXPECT_EQ(s.value("backend_type", ""), "client backend");
    EXPECT_EQ(s.value("state", ""), s.value("pid", 0) == f.idle_pid ? "idle" : "idle in transaction");
  }
  bool warned = false;
  for (const auto& w : plan["warnings"])
    warned = warned || w.get<std::string>().find("run an old copy of su_fixture_stalelib.so") != std::string::npos;
  EXPECT_TRUE(warned) << plan["warnings"].dump(2);

  int64_t id = c.BeginUpgrade("su_fixture_stalelib", "2.0", R"({"recycle_sessions": "idle"})");
  ASSERT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  json status = Status(c, id);
  json stale = status["stale_sessions"];
  EXPECT_EQ(PidsIn(stale["before_apply"]), (std::set<int>{f.idle_pid, f.busy_pid})) << stale.dump(2);
  EXPECT_EQ(PidsIn(stale["after_apply"]), (std::set<int>{f.idle_pid, f.busy_pid})) << stale.dump(2);
  EXPECT_EQ(stale["recycled"].value("mode", ""), "idle");
  EXPECT_EQ(stale["recycled"].value("count", -1), 1) << stale.dump(2);
  EXPECT_EQ(stale["recycled"]["terminated"], json::array({f.idle_pid})) << stale.dump(2);
  ASSERT_EQ(stale["recycled"]["kept"].size(), 1u);
  EXPECT_EQ(stale["recycled"]["kept"][0].value("pid", 0), f.busy_pid);
  std::string events = c.Events(id);
  EXPECT_NE(events.find("pid " + std::to_string(f.idle_pid) + " (client backend"), std::string::npos) << events;
  EXPECT_NE(events.find("recycle_sessions idle: terminated 1 session(s)"), std::string::npos) << events;

  // The idle session is gone; the busy one is alive and still runs build 1, where the function 2.0
  // added does not exist; a new session runs build 2.
  EXPECT_TRUE(WaitUntil([&] { return c.Scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int",
                                              {std::to_string(f.idle_pid)}) == "0"; }, 10s));
  EXPECT_THROW(f.idle->Exec("SELECT 1"), PgError);
  f.busy->ExecScript("COMMIT");
  EXPECT_EQ(f.busy->Exec("SELECT su_stalelib_build()").Scalar(), "1");
  try {
    f.busy->Exec("SELECT su_stalelib_answer()");
    ADD_FAILURE() << "the session on build 1 found a function only build 2 has";
  } catch (const PgError& e) {
    EXPECT_NE(e.message().find("could not find function"), std::string::npos) << e.message();
  }
  auto fresh = c.Connect();
  EXPECT_EQ(fresh->Exec("SELECT su_stalelib_build()").Scalar(), "2");
  EXPECT_EQ(fresh->Exec("SELECT su_stalelib_answer()").Scalar(), "42");
}

TEST(StaleLibrary, by_default_the_sessions_are_named_after_the_apply_and_none_is_ended) {
  TestCluster c;
  StaleFixture f = SessionsOnAReplacedLibrary(c);
  PlanNamingBoth(c, f);
  int64_t id = c.BeginUpgrade("su_fixture_stalelib", "2.0");
  ASSERT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  json stale = Status(c, id)["stale_sessions"];
  EXPECT_EQ(PidsIn(stale["after_apply"]), (std::set<int>{f.idle_pid, f.busy_pid})) << stale.dump(2);
  EXPECT_EQ(stale["recycled"].value("mode", ""), "none");
  EXPECT_EQ(stale["recycled"].value("count", -1), 0);
  std::string events = c.Events(id);
  EXPECT_NE(events.find("recycle_sessions is none: reconnect them"), std::string::npos) << events;
  EXPECT_EQ(f.idle->Exec("SELECT su_stalelib_build()").Scalar(), "1");
}

// "all" ends the busy session too, but never one in a database the upgrade leaves alone: its
// catalog still matches the old library.
TEST(StaleLibrary, recycle_all_ends_the_session_in_a_transaction_too_but_not_one_in_another_database) {
  TestCluster c;
  StaleFixture f = SessionsOnAReplacedLibrary(c, true);
  PlanNamingBoth(c, f);
  int64_t id = c.BeginUpgrade("su_fixture_stalelib", "2.0", R"({"recycle_sessions": "all", "databases": ["postgres"]})");
  ASSERT_EQ(c.WaitForTerminalState(id), "succeeded") << c.Events(id);
  json recycled = Status(c, id)["stale_sessions"]["recycled"];
  EXPECT_EQ(recycled.value("count", -1), 2) << recycled.dump(2);
  ASSERT_EQ(recycled["kept"].size(), 1u) << recycled.dump(2);
  EXPECT_EQ(recycled["kept"][0].value("pid", 0), f.elsewhere_pid);
  EXPECT_NE(recycled["kept"][0].value("reason", "").find("database other is not upgraded"), std::string::npos)
      << recycled.dump(2);
  EXPECT_THROW(f.busy->Exec("SELECT 1"), PgError);
  EXPECT_EQ(f.elsewhere->Exec("SELECT su_stalelib_build()").Scalar(), "1");
}

TEST(StaleLibrary, an_upgrade_without_replaced_libraries_names_no_session) {
  TestCluster c;
  if (!ExtensionAvailable(*c.Connect(), "su_fixture_stalelib")) GTEST_SKIP() << "su_fixture_stalelib is not installed";
  c.Exec("CREATE EXTENSION su_fixture_stalelib VERSION '1.0'");
  auto session = c.Connect();
  EXPECT_EQ(session->Exec("SELECT su_stalelib_build()").Scalar(), "1");
  json plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('su_fixture_stalelib', '2.0')::text"));
  EXPECT_EQ(plan["stale_sessions"], json::array()) << plan.dump(2);
}

}  // namespace
}  // namespace safe_upgrade::testing
