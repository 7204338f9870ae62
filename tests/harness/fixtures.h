// Scenario set-ups shared by several test files.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "test_cluster.h"

namespace safe_upgrade::testing {

// A database with su_rollback_fixture at 1.0, a marks table for marker rows, a poison table, and
// a user health check that version 2.0 fails once a poison value (>= 1000) exists. The snapshot
// taken before the poison row is written passes the dry run; production then fails verification.
void PrepareRollbackFixture(const TestCluster& c);

// The upgrade's report.rollback as status() shows it (failed_data_directory, failed_restore, path...).
nlohmann::json RollbackReport(const TestCluster& c, int64_t upgrade_id);

// 100 marker rows of the given batch in table marks.
void WriteBatch(PgConn& conn, int batch);

// An su_rollback_fixture upgrade to 2.0 held before its apply: its dry run has passed (it waits
// for approval), and a session holds the lock the upgrade script needs, so a test can write rows
// after the restore point before the apply commits.
struct HeldApply {
  std::unique_ptr<PgConn> blocker;
  int64_t id = 0;
};
HeldApply StartHeldUpgrade(const TestCluster& c, const std::string& rollback_target = "auto");

// Ten marker rows (batch 1) and the poison value, before the restore point, then the approval: the
// apply then fails its health check once the held lock is released (ReleaseApply).
void ApproveDoomedApply(const TestCluster& c, const HeldApply& h);
void ReleaseApply(HeldApply& h);

// The marker rows of a rollback test around the held upgrade h, with writer's session: batch 1 and
// the poison value before the restore point, the approval, batch 2 after the restore point,
// while_applying() once the upgrade is applying, batch 3, then the release, after which the apply
// fails its health check. Returns false (with a failure recorded) when a step never came.
bool WriteMarkersAroundDoomedApply(const TestCluster& c, HeldApply& h, std::unique_ptr<PgConn> writer,
                                   const std::function<void()>& while_applying = {});
// After the rollback of such an upgrade: su_rollback_fixture at 1.0 again, and exactly batch 1.
void ExpectOnlyRowsBeforeRestorePoint(const TestCluster& c);

// Whether the upgrade's restore point was created within the timeout.
bool WaitForRestorePoint(const TestCluster& c, int64_t upgrade_id,
                         std::chrono::seconds timeout = std::chrono::seconds(300));

// Parts of production outside its data directory: pg_wal moved to another directory and linked
// (as after initdb --waldir), and tablespace ts1 there too, both owned by the server's OS user.
struct OutsideDirs {
  std::string wal_dir, ts_location, ts_oid;
};
OutsideDirs MoveWalAndCreateTablespace(TestCluster& c);

// <data directory>.ready-<id>: where the upgrade's parked rollback target lives.
std::string ReadyDir(const TestCluster& c, int64_t id);
// Waits until the held upgrade applies and its rollback target has parked (promoted at the
// restore point and stopped by the apply); returns the target's directory.
std::string WaitUntilTargetParked(const TestCluster& c, const HeldApply& h);

}  // namespace safe_upgrade::testing
