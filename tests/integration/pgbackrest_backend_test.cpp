// The pgbackrest backend end to end, with Debian's pgBackRest and a posix repository: the
// snapshot is a backup of the stanza (incremental once a full one exists), the dry-run clone and
// the rollback target are restored from it, a success is followed by a fresh backup, and a
// repository that cannot be reached stops the upgrade before production is touched, or ends a
// rollback that needs it in rollback_failed with the original back up; and all of it with the
// repository in an S3 object store over TLS. Both rollback paths with this backend are in
// rollback_test.cpp.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "fixtures.h"
#include "object_store.h"
#include "pg_errors.h"
#include "pgbackrest_stanza.h"
#include "postgres/catalog.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json Status(const TestCluster& c, int64_t id) {
  return json::parse(c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}));
}

// Takes the agent's OS user's access to the repository away (as an unreachable store would),
// and gives it back when destroyed.
class UnreachableRepository {
 public:
  explicit UnreachableRepository(const TestCluster& c) : dir_(StanzaRepoDir(c)) { chmod(dir_.c_str(), 0000); }
  ~UnreachableRepository() { chmod(dir_.c_str(), 0700); }

 private:
  std::string dir_;
};

class PgBackRestBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = PgBackRestUnavailable(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_F(PgBackRestBackend, the_snapshot_is_a_verified_backup_of_the_stanza_and_a_success_is_backed_up_again) {
  TestCluster c({.backend = "pgbackrest"});
  c.Exec("CREATE EXTENSION su_fixture_multihop VERSION '1.0'");
  int64_t first = c.BeginUpgrade("su_fixture_multihop", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(first, 300s), "succeeded") << c.Events(first);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_multihop'"), "1.1");

  json status = Status(c, first);
  const json& snapshot = status["snapshot"];
  EXPECT_EQ(snapshot.value("method", ""), "pgbackrest") << snapshot.dump();
  std::string label = snapshot["pgbackrest"].value("label", "");
  // The stanza had no backup yet: pgBackRest took a full one.
  EXPECT_EQ(snapshot["pgbackrest"].value("type", ""), "full") << snapshot.dump();
  EXPECT_EQ(snapshot["verification"].value("method", ""), "pgbackrest verify") << snapshot.dump();
  std::vector<std::string> labels = StanzaBackupLabels(c);
  ASSERT_FALSE(labels.empty());
  EXPECT_NE(std::find(labels.begin(), labels.end(), label), labels.end()) << label;
  // Nothing of the cluster was copied into snapshot_dir: the backup lives in the repository.
  EXPECT_FALSE(PathExists(SnapshotDataDir(c.info().agent_config, SnapshotIdFor(first))));
  EXPECT_TRUE(PathExists(SnapshotMetaPath(c.info().agent_config, SnapshotIdFor(first))));
  std::string events = c.Events(first);
  EXPECT_NE(events.find("pgbackrest check passed"), std::string::npos) << events;
  EXPECT_NE(events.find("restoring pgBackRest backup " + label), std::string::npos) << events;

  // After the success, a fresh backup of the upgraded cluster.
  const json& after = status["report"]["verify"]["post_upgrade_backup"];
  std::string after_label = after.value("label", "");
  ASSERT_FALSE(after_label.empty()) << status["report"]["verify"].dump();
  EXPECT_EQ(after.value("prior", ""), label) << after.dump();
  EXPECT_EQ(StanzaBackupLabels(c).back(), after_label);

  // The next upgrade's snapshot is an incremental backup on top of it: it costs what changed.
  c.Exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  int64_t second = c.BeginUpgrade("su_fixture_counter", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(second, 300s), "succeeded") << c.Events(second);
  const json next = Status(c, second)["snapshot"]["pgbackrest"];
  EXPECT_EQ(next.value("type", ""), "incr") << next.dump();
  EXPECT_EQ(next.value("prior", ""), after_label) << next.dump();
  EXPECT_LT(next.value("repo_delta_bytes", uint64_t{0}),
            Status(c, second)["snapshot"].value("size_bytes", uint64_t{0}) / 2)
      << next.dump();
}

TEST_F(PgBackRestBackend, a_failed_dry_run_on_a_clone_restored_from_the_stanza_blocks_the_upgrade) {
  TestCluster c({.backend = "pgbackrest"});
  c.Exec("CREATE EXTENSION su_fixture_dropfn");
  c.Exec("CREATE VIEW answer_view AS SELECT su_dropfn_answer() AS answer");
  int64_t id = c.BeginUpgrade("su_fixture_dropfn", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(id, 300s), "blocked") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_dropfn'"), "1.0");
  std::string events = c.Events(id);
  EXPECT_NE(events.find("restoring pgBackRest backup"), std::string::npos) << events;
  // No clone is left behind.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return !PathExists(JoinPath(c.info().agent_config.ClonesDir(), "dryrun-" + std::to_string(id)));
      },
      30s));
}

TEST_F(PgBackRestBackend,
       an_unreachable_repository_at_the_snapshot_fails_the_upgrade_before_production_is_touched) {
  TestCluster c({.backend = "pgbackrest"});
  c.Exec("CREATE EXTENSION su_fixture_multihop VERSION '1.0'");
  int64_t id = 0;
  {
    UnreachableRepository gone(c);
    id = c.BeginUpgrade("su_fixture_multihop", "1.1");
    ASSERT_EQ(c.WaitForTerminalState(id, 300s), "failed") << c.Events(id);
  }
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_fixture_multihop'"), "1.0");
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
  EXPECT_NE(error.find("pgBackRest stanza \"sandbox\""), std::string::npos) << error;
  EXPECT_NE(error.find("production was not touched"), std::string::npos) << error;
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                     {std::to_string(id)}),
            "0");
}

TEST_F(PgBackRestBackend, an_unreachable_repository_after_the_dry_run_refuses_the_apply) {
  TestCluster c({.backend = "pgbackrest"});
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "auto");
  ReleaseApply(h);
  {
    UnreachableRepository gone(c);
    c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(h.id)});
    ASSERT_EQ(c.WaitForTerminalState(h.id, 300s), "failed") << c.Events(h.id);
  }
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(h.id)});
  // Refused before the apply: the restore point's WAL never reached the repository.
  EXPECT_NE(error.find("not touched"), std::string::npos) << error;
}

TEST_F(PgBackRestBackend,
       a_cold_rollback_that_cannot_reach_the_repository_ends_rollback_failed_with_production_up) {
  TestCluster c({.backend = "pgbackrest"});
  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "cold");
  ApproveDoomedApply(c, h);
  // The apply has proven the archive and waits for the held lock.
  ASSERT_TRUE(WaitUntil(
      [&] { return c.Events(h.id).find("the archive holds every WAL segment") != std::string::npos; }, 300s,
      200ms))
      << c.Events(h.id);
  c.Exec("INSERT INTO marks SELECT 2, g FROM generate_series(1, 5) g");
  std::string state;
  {
    UnreachableRepository gone(c);
    ReleaseApply(h);
    state = c.WaitForTerminalState(h.id, 600s);
  }
  ASSERT_EQ(state, "rollback_failed") << c.Events(h.id);
  // Production was never stopped: the upgraded version and the rows after the restore point.
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "2.0");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 2"), "5");
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  std::string error =
      c.Scalar("SELECT error FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(h.id)});
  EXPECT_NE(error.find("repository cannot be read"), std::string::npos) << error;
}

// An archive_command that does not archive into the stanza: the agent's periodic pgbackrest
// check fails, and plan() and begin() refuse, quoting pgBackRest.
TEST_F(PgBackRestBackend, a_stanza_whose_archive_does_not_work_blocks_plan_and_begin) {
  TestCluster c({.backend = "pgbackrest"});
  c.Exec("CREATE EXTENSION su_fixture_counter VERSION '1.0'");
  c.Exec("ALTER SYSTEM SET archive_command = '/bin/true'");
  c.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitUntil([&] { return c.Scalar("SHOW archive_command") == "/bin/true"; }, 30s));
  json plan;
  ASSERT_TRUE(WaitUntil(
      [&] {
        plan = json::parse(c.Scalar("SELECT safe_upgrade.plan('su_fixture_counter', '1.1')::text"));
        return plan["reasons"].dump().find("pgbackrest check failed") != std::string::npos;
      },
      180s, 1s))
      << plan.dump(2);
  EXPECT_EQ(plan.value("verdict", ""), "blocked");
  const json& backend = plan["pitr"]["backend"];
  EXPECT_EQ(backend.value("kind", ""), "pgbackrest") << backend.dump();
  EXPECT_EQ(backend.value("stanza", ""), "sandbox") << backend.dump();
  EXPECT_EQ(backend.value("check_ok", true), false) << backend.dump();
  auto conn = c.Connect();
  PgError e = ErrorOf(*conn, "SELECT safe_upgrade.begin('su_fixture_counter', '1.1')");
  EXPECT_EQ(e.sqlstate(), "55000") << e.Full();
  EXPECT_NE(e.detail().find("pgbackrest check failed"), std::string::npos) << e.Full();
}

// The same backend with the repository in an object store: S3 served by s3rver on loopback, over
// TLS verified against a throwaway CA. A success, then an upgrade that fails on production and is
// rolled back by restoring the snapshot from the store.
TEST(PgBackRestObjectStore, an_upgrade_and_a_cold_rollback_through_an_s3_repository_over_tls) {
  if (std::string why = PgBackRestUnavailable(); !why.empty()) GTEST_SKIP() << why;
  if (std::string why = ObjectStoreServer::Unavailable(); !why.empty()) GTEST_SKIP() << why;
  ObjectStoreServer store;
  TestCluster c({.backend = "pgbackrest", .repo_options = store.RepoOptions()});
  EXPECT_FALSE(IsDirectory(StanzaRepoDir(c))) << "the repository is the store, not a directory";

  c.Exec("CREATE EXTENSION su_fixture_multihop VERSION '1.0'");
  int64_t first = c.BeginUpgrade("su_fixture_multihop", "1.1");
  ASSERT_EQ(c.WaitForTerminalState(first, 300s), "succeeded") << c.Events(first);

  PrepareRollbackFixture(c);
  HeldApply h = StartHeldUpgrade(c, "cold");
  ASSERT_TRUE(WriteMarkersAroundDoomedApply(c, h, c.Connect()));
  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  ExpectOnlyRowsBeforeRestorePoint(c);
  std::string events = c.Events(h.id);
  EXPECT_NE(events.find("restoring pgBackRest backup"), std::string::npos) << events;
  EXPECT_EQ(RollbackReport(c, h.id).value("path", ""), "snapshot restore");
  // Archiving into the store goes on after the rollback, on the new timeline.
  ProcessResult check = RunPgBackRest(c, {"check"});
  EXPECT_TRUE(check.Ok()) << check.err;
}

}  // namespace
}  // namespace safe_upgrade::testing
