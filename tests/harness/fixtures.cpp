// Scenario set-ups shared by several test files.
#include "fixtures.h"

#include <filesystem>

#include "base/fs_util.h"

namespace safe_upgrade::testing {

using namespace std::chrono_literals;

void PrepareRollbackFixture(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION su_rollback_fixture VERSION '1.0';"
      "CREATE TABLE marks (batch int, n int);"
      "CREATE TABLE poison (v int);");
  c.Scalar(
      "SELECT safe_upgrade.add_health_check('values_still_valid', "
      "'SELECT coalesce(bool_and(su_rb_validate(v)), true) FROM poison', 'su_rollback_fixture')");
}

nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id) {
  auto status = nlohmann::json::parse(
      c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(upgrade_id)}));
  return status["report"].value("rollback", nlohmann::json::object());
}

void WriteBatch(PgConn& conn, int batch) {
  conn.Exec("INSERT INTO marks SELECT $1::int, g FROM generate_series(1, 100) g", {std::to_string(batch)});
}

HeldApply StartHeldUpgrade(const TestCluster& c, const std::string& rollback_target) {
  HeldApply h;
  h.id = c.BeginUpgrade("su_rollback_fixture", "2.0",
                        R"({"require_approval": true, "lock_timeout": "500ms", "max_lock_retries": 100, )"
                        R"("rollback_target": ")" +
                            rollback_target + R"("})");
  EXPECT_TRUE(c.WaitForState(h.id, "awaiting_approval", 300s)) << c.Events(h.id);
  h.blocker = c.Connect();
  h.blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  return h;
}

OutsideDirs MoveWalAndCreateTablespace(TestCluster& c) {
  OutsideDirs o;
  std::string disk = c.ScratchDir("disk2");
  o.wal_dir = JoinPath(disk, "pg_wal");
  o.ts_location = JoinPath(disk, "ts1");
  c.StopServer();
  std::filesystem::rename(JoinPath(c.info().data_dir, "pg_wal"), o.wal_dir);
  std::filesystem::create_directory_symlink(o.wal_dir, JoinPath(c.info().data_dir, "pg_wal"));
  c.StartServer();
  EnsureDir(o.ts_location, 0700);
  ChownTree(o.ts_location, c.info().os_user);
  c.Exec("CREATE TABLESPACE ts1 LOCATION '" + o.ts_location + "'");
  o.ts_oid = c.Scalar("SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'");
  return o;
}

std::string ReadyDir(const TestCluster& c, int64_t id) {
  return c.info().data_dir + ".ready-" + std::to_string(id);
}

void ApproveDoomedApply(const TestCluster& c, const HeldApply& h) {
  c.Exec("INSERT INTO marks SELECT 1, g FROM generate_series(1, 10) g; INSERT INTO poison VALUES (1000);");
  c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(h.id)});
}

bool WaitForRestorePoint(const TestCluster& c, int64_t upgrade_id, std::chrono::seconds timeout) {
  return WaitUntil(
      [&] {
        return c.Scalar("SELECT count(*) FROM safe_upgrade.restore_points WHERE upgrade_id = $1::bigint",
                        {std::to_string(upgrade_id)}) == "1";
      },
      timeout);
}

void ReleaseApply(HeldApply& h) {
  h.blocker->ExecScript("COMMIT");
  h.blocker.reset();
}

bool WriteMarkersAroundDoomedApply(const TestCluster& c, HeldApply& h, std::unique_ptr<PgConn> writer,
                                   const std::function<void()>& while_applying) {
  WriteBatch(*writer, 1);
  writer->Exec("INSERT INTO poison VALUES (1000)");
  c.Scalar("SELECT safe_upgrade.approve($1::bigint)", {std::to_string(h.id)});
  if (!WaitForRestorePoint(c, h.id)) {
    ADD_FAILURE() << "no restore point\n" << c.Events(h.id);
    return false;
  }
  WriteBatch(*writer, 2);
  if (!c.WaitForState(h.id, "applying", 120s)) {
    ADD_FAILURE() << "never applying\n" << c.Events(h.id);
    return false;
  }
  if (while_applying) while_applying();
  WriteBatch(*writer, 3);
  writer.reset();
  ReleaseApply(h);
  return true;
}

void ExpectOnlyRowsBeforeRestorePoint(const TestCluster& c) {
  EXPECT_EQ(c.Scalar("SELECT extversion FROM pg_extension WHERE extname = 'su_rollback_fixture'"), "1.0");
  EXPECT_EQ(c.Scalar("SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM marks"), "1");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM marks"), "100");
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM poison"), "1");
}

std::string WaitUntilTargetParked(const TestCluster& c, const HeldApply& h) {
  EXPECT_TRUE(c.WaitForState(h.id, "applying", 300s)) << c.Events(h.id);
  std::string ready = ReadyDir(c, h.id);
  // The apply parks it (promoted at the restore point, then stopped) before it touches production.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return c.Events(h.id).find("the rollback target was promoted at restore point") !=
                   std::string::npos &&
               IsDirectory(ready) && !PathExists(ready + "/postmaster.pid");
      },
      120s))
      << c.Events(h.id);
  return ready;
}

}  // namespace safe_upgrade::testing
