// Phase 3: production apply with automatic point-in-time rollback, in the style of PostgreSQL's
// src/test/recovery/t/003_recovery_targets.pl: marker rows before and after the restore point,
// and the exact rows present afterwards.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "fixtures.h"
#include "pgbackrest_stanza.h"
#include "postgres/catalog.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// Both rollback paths: "ready" swaps in the target parked at the restore point, "cold" restores
// the snapshot and replays WAL. Each must keep exactly the rows written before the restore point,
// with each backend: the agent's own snapshots and archive, and a pgBackRest stanza.
class RollbackPath : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(RollbackPath, rollback_restores_rows_written_before_restore_point_and_discards_later_ones) {
  const auto& [backend, mode] = GetParam();
  if (backend == "pgbackrest" && !PgBackRestUnavailable().empty()) GTEST_SKIP() << PgBackRestUnavailable();
  TestCluster c({.backend = backend});
  PrepareRollbackFixture(c);
  auto writer = c.Connect();
  HeldApply h = StartHeldUpgrade(c, mode);
  // Written after the snapshot, before the restore point: must survive.
  WriteBatch(*writer, 1);
  writer->Exec("INSERT INTO poison VALUES (1000)");
  std::string timeline_before = c.Scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
  c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(h.id)});
  ASSERT_TRUE(WaitForRestorePoint(c, h.id)) << c.Events(h.id);
  // Written after the restore point: must be discarded by the rollback.
  WriteBatch(*writer, 2);
  ASSERT_TRUE(c.WaitForState(h.id, "applying", 120s)) << c.Events(h.id);
  WriteBatch(*writer, 3);
  writer.reset();
  h.blocker->ExecScript("COMMIT");
  h.blocker.reset();

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);

  // The old version and its behaviour are back.
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_rb_applied"), "0");
  // Exactly the rows written before the restore point.
  EXPECT_EQ(c.Scalar("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM marks"), "1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "100");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM poison"), "1");

  // status() tells the story: apply, rollback and the data-loss window.
  json status = json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(h.id)}));
  std::string events = c.Events(h.id);
  EXPECT_NE(events.find("applying"), std::string::npos) << events;
  EXPECT_NE(events.find("data-loss window recorded"), std::string::npos) << events;
  EXPECT_NE(events.find("rolled back to restore point"), std::string::npos) << events;
  auto window = status.dump();
  EXPECT_NE(window.find("wal_bytes_discarded"), std::string::npos) << window;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(h.id)}),
            "1");

  // A new timeline that accepts writes.
  std::string timeline_after = c.Scalar("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
  EXPECT_GT(std::stoul(timeline_after, nullptr, 16), std::stoul(timeline_before, nullptr, 16));
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  c.Exec("INSERT INTO marks VALUES (4, 1)");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 4"), "1");
  // The recovery settings are gone, so a later recovery does not inherit them.
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM pg_file_settings WHERE name IN ('restore_command', "
                     "'recovery_target_name', 'recovery_target_action', 'recovery_target_timeline')"),
            "0");
  EXPECT_FALSE(PathExists(c.info().data_dir + "/recovery.signal"));
  // The failed data directory was moved aside, not deleted, under a name no other cluster used.
  std::string aside = status["report"]["rollback"].value("failed_data_directory", "");
  EXPECT_EQ(aside.rfind(c.info().data_dir + ".failed-" + std::to_string(h.id) + "-", 0), 0u) << aside;
  EXPECT_TRUE(IsDirectory(aside)) << aside;
  // The copy production now runs on was flushed to disk before it was relied on.
  EXPECT_NE(events.find(mode == "ready" ? "rollback target synced to disk"
                                        : "snapshot restored and synced to disk"),
            std::string::npos)
      << events;

  // The path taken is the one asked for, and no target is left behind.
  EXPECT_EQ(status["report"]["rollback_target"].value("mode", ""), mode) << status["report"].dump();
  EXPECT_EQ(status["report"]["rollback"].value("path", ""),
            mode == "ready" ? "parked target" : "snapshot restore")
      << status["report"]["rollback"].dump();
  if (mode == "ready") {
    EXPECT_NE(events.find("is parked at restore point"), std::string::npos) << events;
    // The target was promoted at the restore point before the rollback: the swapped-in server
    // started as after a clean shutdown, with no WAL to replay and no end-of-recovery checkpoint
    // inside the downtime, however much production wrote since the snapshot.
    std::string log = ReadFile(c.info().agent_config.server_log);
    auto last_start = log.rfind("database system was ");
    ASSERT_NE(last_start, std::string::npos) << log;
    std::string since = log.substr(last_start);
    EXPECT_EQ(since.rfind("database system was shut down at", 0), 0u) << since.substr(0, since.find('\n'));
    EXPECT_EQ(since.find("redo starts at"), std::string::npos) << since;
    EXPECT_EQ(since.find("end-of-recovery"), std::string::npos) << since;
  }
  // The new timeline's history file reaches the archive, so a later recovery can follow it.
  if (backend == "pgbackrest") {
    EXPECT_TRUE(WaitUntil([&] { return StanzaArchived(c, timeline_after + ".history"); }, 60s, 500ms));
    // Archiving goes on into the stanza on the new timeline.
    ProcessResult check = RunPgBackRest(c, {"check"});
    EXPECT_TRUE(check.Ok()) << check.err;
    // The agent's own check, cut short by the rollback's restart, does not block the next upgrade.
    std::string reasons = c.Scalar("SELECT safe_upgrade.plan('su_rollback_fixture', '2.0')->>'reasons'");
    EXPECT_EQ(reasons.find("pgbackrest check"), std::string::npos) << reasons;
    EXPECT_NE(events.find("restoring pgBackRest backup"), std::string::npos) << events;
  } else {
    std::string history = JoinPath(c.info().agent_config.wal_archive_dir, timeline_after + ".history");
    EXPECT_TRUE(WaitUntil([&] { return PathExists(history); }, 60s)) << history;
  }
  EXPECT_FALSE(PathExists(ReadyDir(c, h.id)));
}

std::string RollbackPathName(const ::testing::TestParamInfo<RollbackPath::ParamType>& info) {
  const std::string& backend = std::get<0>(info.param);
  return backend == "local" ? std::get<1>(info.param) : backend + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(ReadyAndCold, RollbackPath,
                         ::testing::Combine(::testing::Values("local", "pgbackrest"),
                                            ::testing::Values("ready", "cold")),
                         RollbackPathName);

TEST(Rollback, a_target_that_is_not_parked_falls_back_to_restoring_the_snapshot) {
  TestCluster c;
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "ready");
  ApproveDoomedApply(c, h);
  // Parked; then an operator moves it away.
  std::string ready = WaitUntilTargetParked(c, h);
  std::string moved = JoinPath(c.root(), "ready-moved-by-test");
  std::filesystem::rename(ready, moved);
  ReleaseApply(h);

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  std::string events = c.Events(h.id);
  EXPECT_NE(events.find("the rollback target cannot be used"), std::string::npos) << events;
  EXPECT_NE(events.find("restoring snapshot"), std::string::npos) << events;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "10");
}

TEST(Rollback, a_parked_target_is_recognized_from_its_control_file_without_its_log) {
  TestCluster c;
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "ready");
  ApproveDoomedApply(c, h);
  WaitUntilTargetParked(c, h);
  // Only C and POSIX locales exist on the test machines, so a server with translated messages
  // cannot be had: the parked target's log is removed instead, as lc_messages would hide the line.
  std::string log =
      JoinPath(JoinPath(c.info().agent_config.ClonesDir(), "ready-" + std::to_string(h.id)), "postgres.log");
  ASSERT_TRUE(PathExists(log)) << log;
  std::filesystem::remove(log);
  ReleaseApply(h);

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  std::string events = c.Events(h.id);
  EXPECT_NE(events.find("is parked at restore point"), std::string::npos) << events;
  EXPECT_NE(events.find("branched_at_lsn"), std::string::npos) << events;
  EXPECT_EQ(RollbackReport(c, h.id).value("path", ""), "parked target") << RollbackReport(c, h.id).dump();
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "10");
}

TEST(Rollback, a_leftover_directory_under_the_old_moved_aside_name_does_not_stop_the_rollback) {
  TestCluster c;
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "cold");
  // What an earlier cluster of the same name left behind (its upgrade ids also started at 1).
  std::string leftover = c.info().data_dir + ".failed-" + std::to_string(h.id);
  EnsureDir(leftover, 0700);
  AtomicWriteFile(JoinPath(leftover, "PG_VERSION"), "15\n");
  ApproveDoomedApply(c, h);
  ReleaseApply(h);

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "10");
  // The leftover is untouched; the rollback set production aside under its own name.
  EXPECT_EQ(ReadFile(JoinPath(leftover, "PG_VERSION")), "15\n");
  std::string aside = RollbackReport(c, h.id).value("failed_data_directory", "");
  EXPECT_NE(aside, leftover);
  EXPECT_TRUE(PathExists(JoinPath(aside, "PG_VERSION"))) << aside;
}

TEST(Rollback, a_restore_copy_that_fails_ends_rollback_failed_with_production_up_on_its_original_data) {
  TestCluster c;
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "cold");
  ApproveDoomedApply(c, h);
  ASSERT_TRUE(c.WaitForState(h.id, "applying", 300s)) << c.Events(h.id);
  // Written after the restore point: present only on the original data directory.
  c.Exec("INSERT INTO marks SELECT 2, g FROM generate_series(1, 5) g");
  // The snapshot's copy fails half-way: one file the agent's OS user cannot read.
  std::string unreadable =
      JoinPath(SnapshotDataDir(c.info().agent_config, SnapshotIdFor(h.id)), "global/pg_control");
  ASSERT_TRUE(PathExists(unreadable)) << unreadable;
  ASSERT_EQ(chmod(unreadable.c_str(), 0000), 0);
  ReleaseApply(h);

  std::string state = c.WaitForTerminalState(h.id, 600s);
  chmod(unreadable.c_str(), 0600);
  ASSERT_EQ(state, "rollback_failed") << c.Events(h.id);
  // Production is up on its original data: the upgraded version and the rows after the restore point.
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "2.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 2"), "5");
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  c.Exec("INSERT INTO marks VALUES (3, 1)");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 3"), "1");
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(h.id)});
  EXPECT_NE(error.find("restored"), std::string::npos) << error;
  EXPECT_FALSE(PathExists(RollbackReport(c, h.id).value("failed_data_directory", "")));
}

// Takes write permission away from the data directory's parent, where the rollback target goes
// (as a full disk would stop it), and gives it back when destroyed.
class ReadOnlyParentOfDataDir {
 public:
  explicit ReadOnlyParentOfDataDir(const TestCluster& c)
      : parent_(std::filesystem::path(c.info().data_dir).parent_path()),
        mode_(std::filesystem::status(parent_).permissions()) {
    std::filesystem::permissions(parent_,
                                 std::filesystem::perms::owner_write | std::filesystem::perms::group_write |
                                     std::filesystem::perms::others_write,
                                 std::filesystem::perm_options::remove);
  }
  ~ReadOnlyParentOfDataDir() { std::filesystem::permissions(parent_, mode_); }

 private:
  std::filesystem::path parent_;
  std::filesystem::perms mode_;
};

TEST(Rollback, rollback_target_ready_that_cannot_be_prepared_fails_before_production_is_touched) {
  TestCluster c;
  PrepareRollbackFixture(c);
  std::string started = c.Scalar("SELECT pg_postmaster_start_time()::text");
  // "ready" insists on a target, and none can be made.
  auto parent = std::make_unique<ReadOnlyParentOfDataDir>(c);
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"rollback_target": "ready"})");
  std::string state = c.WaitForTerminalState(id, 600s);
  parent.reset();
  ASSERT_EQ(state, "failed") << c.Events(id);
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("could not prepare the rollback target"), std::string::npos) << error;
  EXPECT_NE(error.find("production was not touched"), std::string::npos) << error;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(id)}),
            "0");
}

TEST(Rollback, rollback_target_auto_that_cannot_be_prepared_goes_on_with_the_cold_path) {
  TestCluster c;
  PrepareRollbackFixture(c);
  auto parent = std::make_unique<ReadOnlyParentOfDataDir>(c);
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0");
  std::string state = c.WaitForTerminalState(id, 600s);
  parent.reset();
  ASSERT_EQ(state, "succeeded") << c.Events(id);
  json status = json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}));
  EXPECT_EQ(status["report"]["rollback_target"].value("mode", ""), "cold") << status["report"].dump();
  EXPECT_NE(c.Events(id).find("no fast rollback target"), std::string::npos) << c.Events(id);
}

TEST(Rollback, lock_contention_ends_failed_with_the_blocker_named_and_no_restart) {
  TestCluster c;
  PrepareRollbackFixture(c);
  std::string started = c.Scalar("SELECT pg_postmaster_start_time()::text");
  auto blocker = c.Connect();
  blocker->ExecScript(
      "SET application_name = 'nightly-report'; BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  std::string blocker_pid = std::to_string(blocker->BackendPid());
  int64_t id =
      c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"lock_timeout": "300ms", "max_lock_retries": 2})");
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "failed") << c.Events(id);
  std::string events = c.Events(id);
  EXPECT_NE(events.find(blocker_pid), std::string::npos) << events;
  EXPECT_NE(events.find("holds AccessShareLock on su_rb_gate"), std::string::npos) << events;
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM su_rb_applied"), "0");
  // Not applied: its rollback target is not kept.
  EXPECT_FALSE(PathExists(ReadyDir(c, id)));
  blocker->ExecScript("COMMIT");
}

TEST(Rollback, manual_rollback_of_a_succeeded_upgrade_restores_the_old_version) {
  TestCluster c;
  PrepareRollbackFixture(c);
  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0");
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "succeeded") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "2");
  // Succeeded: the parked target was removed; a later rollback restores the snapshot.
  EXPECT_FALSE(PathExists(ReadyDir(c, id)));
  c.Scalar("SELECT safe_upgrade.rollback($1::bigint)", {std::to_string(id)});
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "rolled_back") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "1");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
}

TEST(Rollback, rollback_of_unknown_or_never_applied_upgrade_is_refused_and_nothing_stops) {
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}});
  std::string started = c.Scalar("SELECT pg_postmaster_start_time()::text");
  auto conn = c.Connect();
  try {
    conn->Exec("SELECT safe_upgrade.rollback(987654)");
    FAIL() << "rollback of an unknown id succeeded";
  } catch (const PgError& e) {
    EXPECT_EQ(e.sqlstate(), "22023") << e.what();
  }
  conn->Exec("CREATE EXTENSION hstore VERSION '1.4'");
  int64_t id = c.BeginUpgrade("hstore", "1.8");
  try {
    conn->Exec("SELECT safe_upgrade.rollback($1::bigint)", {std::to_string(id)});
    FAIL() << "rollback of a queued upgrade succeeded";
  } catch (const PgError& e) {
    EXPECT_EQ(e.sqlstate(), "55000") << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started);
}

}  // namespace
}  // namespace safe_upgrade::testing
