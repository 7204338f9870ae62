// Scenario set-ups shared by several test files.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "test_cluster.h"

namespace safe_upgrade::testing {

// A database with su_rollback_fixture at 1.0, a marks table for marker rows, a poison table, and
// a user health check that version 2.0 fails once a poison value (>= 1000) exists. The snapshot
// taken before the poison row is written passes the dry run; production then fails verification.
void PrepareRollbackFixture(const TestCluster& c);

// 100 marker rows of one batch into marks.
void WriteBatch(PgConn& conn, int batch);

// An upgrade of su_rollback_fixture to 2.0, past its dry run and held at awaiting_approval, with a
// session holding the lock its update script needs: once approved it creates its restore point,
// then waits in the apply until ReleaseApply, so a test can write rows after the restore point.
struct HeldApply {
  std::unique_ptr<PgConn> blocker;
  int64_t id = 0;
};
HeldApply StartHeldUpgrade(const TestCluster& c, const std::string& rollback_target = "auto");
void ReleaseApply(HeldApply& h);
// Approves the held upgrade and waits until its restore point is in the catalog.
bool ApproveAndWaitForRestorePoint(const TestCluster& c, const HeldApply& h);

// Parts of production outside its data directory: pg_wal moved to another directory and linked
// (as after initdb --waldir), and tablespace ts1 there too, both owned by the server's OS user.
struct OutsideDirs {
  std::string wal_dir, ts_location, ts_oid;
};
OutsideDirs MoveWalAndCreateTablespace(TestCluster& c);

// The upgrade's report.rollback as status() shows it (failed_data_directory, failed_restore, path...).
nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id);

}  // namespace safe_upgrade::testing
