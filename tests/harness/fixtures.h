// Scenario set-ups shared by several test files.
#pragma once

#include <nlohmann/json.hpp>

#include "test_cluster.h"

namespace safe_upgrade::testing {

// A database with su_rollback_fixture at 1.0, a marks table for marker rows, a poison table, and
// a user health check that version 2.0 fails once a poison value (>= 1000) exists. The snapshot
// taken before the poison row is written passes the dry run; production then fails verification.
void PrepareRollbackFixture(const TestCluster& c);

// The upgrade's report.rollback as status() shows it (failed_data_directory, failed_restore, path...).
nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id);

}  // namespace safe_upgrade::testing
