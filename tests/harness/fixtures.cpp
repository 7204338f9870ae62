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

nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id) {
  auto status = nlohmann::json::parse(
      c.Scalar("SELECT safe_upgrade.status($1::bigint)::text", {std::to_string(upgrade_id)}));
  return status["report"].value("rollback", nlohmann::json::object());
}

}  // namespace safe_upgrade::testing
