// Debian's layout (README, "Install on a real server"): a pg_createcluster cluster whose
// postgresql.conf, pg_hba.conf and pg_ident.conf live in /etc/postgresql/15/NAME, not in the data
// directory, controlled with pg_ctlcluster. The dry run, the parked rollback target and the swap
// must all work from that configuration; marker rows before and after the restore point show
// exactly what a rollback through the parked target keeps.
#include "debian_cluster.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"
#include "fixtures.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json Report(const TestCluster& c, int64_t id) {
  return json::parse(
      c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(id)}))["report"];
}

// Skipped, saying why, where pg_createcluster cannot run (it needs root and postgresql-common).
class DebianLayout : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = DebianClustersUnavailable();
    if (!why.empty()) GTEST_SKIP() << "needs a pg_createcluster cluster, which cannot be made here: " << why;
  }
};

TEST_F(DebianLayout,
       failed_verification_rolls_back_through_the_parked_target_keeping_rows_before_the_restore_point) {
  TestCluster c({.debian_cluster = true});
  const std::string conf_dir = c.debian().ConfigDir();
  ASSERT_FALSE(PathExists(JoinPath(c.info().data_dir, "pg_hba.conf")));
  PrepareRollbackFixture(c);
  // rollback_target "auto", the default: a target that cannot start would silently mean the cold path.
  HeldApply h = StartHeldUpgrade(c, "auto");
  EXPECT_NE(c.Events(h.id).find("dry run passed"), std::string::npos) << c.Events(h.id);
  ApproveDoomedApply(c, h);  // batch 1 (10 rows) and the poison, before the restore point
  ASSERT_TRUE(WaitForRestorePoint(c, h.id)) << c.Events(h.id);
  auto writer = c.Connect();
  WriteBatch(*writer, 2);  // after the restore point: the rollback discards it
  writer.reset();
  WaitUntilTargetParked(c, h);
  ReleaseApply(h);

  ASSERT_EQ(c.WaitForTerminalState(h.id, 600s), "rolled_back") << c.Events(h.id);
  // Exactly the rows written before the restore point, and the old version.
  EXPECT_EQ(c.Scalar("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM marks"), "1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "10");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM poison"), "1");
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  // Through the parked target, not the cold path.
  json report = Report(c, h.id);
  EXPECT_EQ(report["rollback_target"].value("mode", ""), "ready") << report.dump();
  EXPECT_EQ(report["rollback"].value("path", ""), "parked target") << report.dump();
  EXPECT_NE(c.Events(h.id).find("is parked at restore point"), std::string::npos) << c.Events(h.id);
  EXPECT_FALSE(PathExists(ReadyDir(c, h.id)));
  // pg_ctlcluster started the swapped-in directory with the real configuration from /etc: the
  // test's own pg_ident.conf map is what lets these queries in at all.
  EXPECT_EQ(c.Scalar("SELECT current_setting('hba_file')"), conf_dir + "/pg_hba.conf");
  EXPECT_EQ(c.Scalar("SELECT current_setting('ident_file')"), conf_dir + "/pg_ident.conf");
  EXPECT_EQ(c.Scalar("SELECT current_setting('config_file')"), conf_dir + "/postgresql.conf");
  EXPECT_EQ(c.Scalar("SELECT current_setting('archive_mode')"), "on");
  EXPECT_FALSE(PathExists(JoinPath(c.info().data_dir, "postgresql.conf")));
  EXPECT_FALSE(PathExists(JoinPath(c.info().data_dir, "pg_hba.conf")));
  EXPECT_EQ(c.Scalar("SELECT pg_is_in_recovery()::text"), "false");
  c.Exec("INSERT INTO marks VALUES (3, 1)");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks WHERE batch = 3"), "1");
}

TEST_F(DebianLayout, dry_run_validates_and_an_upgrade_succeeds_with_a_parked_target_ready) {
  TestCluster c({.debian_cluster = true});
  PrepareRollbackFixture(c);
  int64_t dry = c.BeginUpgrade("su_rollback_fixture", "2.0", R"({"dry_run_only": true})");
  ASSERT_EQ(c.WaitForTerminalState(dry, 600s), "validated") << c.Events(dry);
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");

  int64_t id = c.BeginUpgrade("su_rollback_fixture", "2.0");
  ASSERT_EQ(c.WaitForTerminalState(id, 600s), "succeeded") << c.Events(id);
  EXPECT_EQ(c.Scalar("SELECT su_rb_answer()::text"), "2");
  // The target was prepared and started from /etc's configuration (a rollback could have used it),
  // then removed once the upgrade succeeded.
  json report = Report(c, id);
  EXPECT_EQ(report["rollback_target"].value("mode", ""), "ready") << report.dump() << c.Events(id);
  EXPECT_EQ(c.Events(id).find("no fast rollback target"), std::string::npos) << c.Events(id);
  EXPECT_FALSE(PathExists(ReadyDir(c, id)));
}

}  // namespace
}  // namespace safe_upgrade::testing
