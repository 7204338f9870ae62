// Scenario set-ups shared by several test files.
#include "fixtures.h"

namespace safe_upgrade::testing {

void PrepareRollbackFixture(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION su_rollback_fixture VERSION '1.0';"
      "CREATE TABLE marks (batch int, n int);"
      "CREATE TABLE poison (v int);");
  c.Scalar(
      "SELECT safe_upgrade.add_health_check('values_still_valid', "
      "'SELECT coalesce(bool_and(su_rb_validate(v)), true) FROM poison', 'su_rollback_fixture')");
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
  EXPECT_TRUE(c.WaitForState(h.id, "awaiting_approval", std::chrono::seconds(300))) << c.Events(h.id);
  h.blocker = c.Connect();
  h.blocker->ExecScript("BEGIN; LOCK TABLE su_rb_gate IN ACCESS SHARE MODE;");
  return h;
}

void ReleaseApply(HeldApply& h) {
  h.blocker->ExecScript("COMMIT");
  h.blocker.reset();
}

nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id) {
  auto status = nlohmann::json::parse(
      c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(upgrade_id)}));
  return status["report"].value("rollback", nlohmann::json::object());
}

}  // namespace safe_upgrade::testing
