// The agent's snapshot job against a real cluster, driven directly over gRPC (the scheduler is
// switched off with safe_upgrade.enabled = off so it leaves the upgrade rows alone): verified
// metadata and journal, the verification-failure path with a really corrupted backup, the
// free-space refusal before any copy, recovery from a crash mid-job, and retention.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agent_job_helpers.h"
#include "base/config.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/catalog.h"
#include "rpc/agent_client.h"
#include "snapshots/retention.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

const std::map<std::string, std::string> kSchedulerOff = {{"safe_upgrade.enabled", "off"}};

int64_t CreateUpgradeRow(const TestCluster& c, const std::string& extname = "fixture_ext") {
  return InsertUpgrade(c, extname, "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");
}

// The job's error names every one of parts.
void ExpectErrorNames(const FinishedJob& run, std::initializer_list<const char*> parts) {
  for (const char* part : parts) EXPECT_NE(run.error.find(part), std::string::npos) << run.error;
}

bool HasEvent(const FinishedJob& job, const std::string& text) {
  for (const auto& e : job.events)
    if (e.message.find(text) != std::string::npos) return true;
  return false;
}

// After a crash the agent's stale socket file exists before the new agent listens on it.
void WaitForAgent(const TestCluster& c) {
  auto client = AgentClient::Create(c.info().agent_config.listen, 2000);
  ASSERT_TRUE(WaitUntil(
      [&] {
        AgentPing ping;
        return client->Ping(ping).ok;
      },
      30s));
}

std::string SnapshotData(const TestCluster& c, int64_t id) {
  return SnapshotDataDir(c.info().agent_config, SnapshotIdFor(id));
}

// Rewrites the sandbox's agent.toml and restarts the agent, so one test can change its config.
void RestartAgentWith(TestCluster& c, const AgentConfig& config) {
  c.StopAgent();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(config), 0644);
  c.StartAgent();
}

bool LsnGreater(const TestCluster& c, const std::string& a, const std::string& b) {
  return c.Scalar("SELECT ($1::pg_lsn > $2::pg_lsn)::text", {a, b}) == "true";
}

TEST(Snapshot, job_writes_verified_metadata_reports_progress_and_journals_the_snapshot_id) {
  TestCluster c({.settings = kSchedulerOff});
  c.Exec("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g");
  int64_t id = CreateUpgradeRow(c);
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "succeeded") << run.error << "\n" << run.EventText();

  std::string snapshot_id = "snap-" + std::to_string(id);
  std::string meta_path = SnapshotMetaPath(c.info().agent_config, snapshot_id);
  ASSERT_TRUE(PathExists(meta_path));
  auto meta = nlohmann::json::parse(ReadFile(meta_path));
  EXPECT_EQ(meta, run.result) << "the job's result is the snapshot metadata";
  EXPECT_EQ(meta.at("snapshot_id"), snapshot_id);
  EXPECT_EQ(meta.at("upgrade_id"), id);
  EXPECT_EQ(meta.at("system_identifier"), c.Scalar("SELECT system_identifier::text FROM pg_control_system()"));
  EXPECT_EQ(meta.at("timeline"), 1);
  EXPECT_EQ(meta.at("verified"), true);
  EXPECT_GT(meta.at("size_bytes").get<uint64_t>(), 10u * 1024 * 1024);
  EXPECT_GE(meta.at("duration_s").get<double>(), 0.0);
  EXPECT_FALSE(meta.at("created_at").get<std::string>().empty());
  EXPECT_EQ(meta.at("extensions").at("safe_upgrade"), c.Scalar("SELECT extversion FROM pg_extension "
                                                               "WHERE extname = 'safe_upgrade'"));
  EXPECT_EQ(meta.at("extensions").at("plpgsql"), "1.0");
  std::string start = meta.at("backup_start_lsn"), stop = meta.at("backup_stop_lsn");
  EXPECT_TRUE(LsnGreater(c, stop, start)) << start << " .. " << stop;
  EXPECT_TRUE(LsnGreater(c, c.Scalar("SELECT pg_current_wal_lsn()::text"), stop) ||
              c.Scalar("SELECT pg_current_wal_lsn()::text") == stop);

  std::string data = SnapshotData(c, id);
  EXPECT_TRUE(PathExists(JoinPath(data, "PG_VERSION")));
  EXPECT_TRUE(PathExists(JoinPath(data, "backup_label")));
  EXPECT_TRUE(PathExists(JoinPath(data, "backup_manifest")));
  EXPECT_FALSE(PathExists(JoinPath(data, "standby.signal"))) << "a snapshot must never start as a standby";
  EXPECT_FALSE(PathExists(JoinPath(Dirname(data), "data.partial")));
  // The published copy still verifies in place.
  auto verify = c.RunAsServiceUser({JoinPath(kPgBinDir, "pg_verifybackup"), data});
  EXPECT_TRUE(verify.Ok()) << verify.err;

  bool progress_event = false;
  for (const auto& e : run.events) {
    if (e.message.rfind("base backup ", 0) != 0) continue;
    auto d = nlohmann::json::parse(e.detail_json);
    progress_event = d.contains("percent") && d.contains("done_mb") && d.contains("mb_per_s");
    if (progress_event) break;
  }
  EXPECT_TRUE(progress_event) << run.EventText();
  EXPECT_TRUE(HasEvent(run, "backup verified")) << run.EventText();

  auto client = AgentClient::Create(c.info().agent_config.listen, 5000);
  AgentJournal journal;
  auto err = client->GetJournal(id, journal);
  ASSERT_TRUE(err.ok) << err.message;
  EXPECT_EQ(journal.snapshot_id, snapshot_id);
  EXPECT_NE(c.AgentLog().find("upgrade " + std::to_string(id) + ": [snapshot]"), std::string::npos);
}

TEST(Snapshot, corrupted_backup_fails_with_pg_verifybackup_message_and_production_is_untouched) {
  TestCluster c({.settings = kSchedulerOff, .agent_env = {{"SAFE_UPGRADE_FAILPOINT", "snapshot:corrupt_before_verify"}}});
  std::string started_at = c.Scalar("SELECT pg_postmaster_start_time()::text");
  int64_t id = CreateUpgradeRow(c);
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "failed") << run.EventText();
  ExpectErrorNames(run, {"pg_verifybackup", "checksum mismatch"});
  auto detail = run.result;
  EXPECT_EQ(detail.value("tool", ""), "pg_verifybackup");
  EXPECT_NE(detail.value("stderr", "").find("checksum mismatch"), std::string::npos) << detail.dump();

  const auto& config = c.info().agent_config;
  std::string snapshot_id = SnapshotIdFor(id);
  EXPECT_FALSE(PathExists(SnapshotMetaPath(config, snapshot_id))) << "an unverified snapshot was published";
  EXPECT_FALSE(PathExists(SnapshotDataDir(config, snapshot_id)));
  EXPECT_THROW(LoadSnapshotMeta(config, snapshot_id), std::runtime_error);
  auto client = AgentClient::Create(config.listen, 5000);
  AgentJournal journal;
  ASSERT_TRUE(client->GetJournal(id, journal).ok);
  EXPECT_EQ(journal.snapshot_id, "");

  EXPECT_EQ(c.Scalar("SELECT pg_postmaster_start_time()::text"), started_at);
  EXPECT_EQ(c.Scalar("SELECT count(*) FROM safe_upgrade.upgrades WHERE id = $1::bigint AND state = 'snapshotting'",
                     {std::to_string(id)}),
            "1");
}

TEST(Snapshot, insufficient_free_space_is_refused_before_any_copy_naming_both_numbers) {
  TestCluster c({.settings = kSchedulerOff});
  AgentConfig config = c.info().agent_config;
  config.disk_reserve_mb = 100000000;  // 100 TB
  RestartAgentWith(c, config);
  int64_t id = CreateUpgradeRow(c);
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "failed") << run.EventText();
  ExpectErrorNames(run, {"MB free", "100000000 MB must remain free"});
  auto detail = run.result;
  EXPECT_GT(detail.value("free_bytes", 0ULL), 0ULL) << detail.dump();
  EXPECT_GT(detail.value("cluster_bytes", 0ULL), 0ULL) << detail.dump();
  EXPECT_NE(run.error.find(std::to_string(detail.value("free_bytes", 0ULL) / (1024 * 1024)) + " MB free"),
            std::string::npos)
      << run.error;
  std::string snap_dir = SnapshotDir(config, SnapshotIdFor(id));
  EXPECT_FALSE(PathExists(JoinPath(snap_dir, "data.partial")));
  EXPECT_FALSE(PathExists(JoinPath(snap_dir, "data")));
  EXPECT_FALSE(HasEvent(run, "pg_basebackup into")) << run.EventText();
}

TEST(Snapshot, rerun_after_a_crash_mid_job_replaces_the_leftover_partial_copy) {
  TestCluster c({.settings = kSchedulerOff, .agent_env = {{"SAFE_UPGRADE_FAILPOINT", "snapshot:after_basebackup"}}});
  int64_t id = CreateUpgradeRow(c);
  auto client = AgentClient::Create(c.info().agent_config.listen, 5000);
  std::string job_id;
  ASSERT_TRUE(client->StartJob(JobKind::kSnapshot, id, job_id).ok);
  ASSERT_TRUE(WaitUntil([&] { return !c.AgentRunning(); }, 120s)) << "the failpoint did not kill the agent";
  std::string partial = JoinPath(SnapshotDir(c.info().agent_config, SnapshotIdFor(id)), "data.partial");
  ASSERT_TRUE(PathExists(JoinPath(partial, "PG_VERSION"))) << "the crash left no partial copy to test with";

  c.StartAgent();  // without the failpoint
  WaitForAgent(c);
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "succeeded") << run.error << "\n" << run.EventText();
  EXPECT_TRUE(HasEvent(run, "left by an interrupted snapshot")) << run.EventText();
  EXPECT_FALSE(PathExists(partial));
  EXPECT_NO_THROW(LoadSnapshotMeta(c.info().agent_config, SnapshotIdFor(id)));
}

TEST(Snapshot, backup_max_rate_throttles_the_base_backup) {
  TestCluster c({.settings = kSchedulerOff});
  AgentConfig config = c.info().agent_config;
  config.backup_max_rate = "8M";
  RestartAgentWith(c, config);
  uint64_t cluster_mb = std::stoull(c.Scalar("SELECT sum(pg_database_size(oid)) / 1048576 FROM pg_database"));
  int64_t id = CreateUpgradeRow(c);
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "succeeded") << run.error << "\n" << run.EventText();
  EXPECT_TRUE(HasEvent(run, "(max rate 8M)")) << run.EventText();
  // A lower bound only: throttling can make the copy slower, never faster, than size / rate.
  double floor_s = static_cast<double>(cluster_mb) / 8.0 * 0.8;
  EXPECT_GE(run.result.at("duration_s").get<double>(), floor_s) << cluster_mb << " MB at 8 MB/s";
}

TEST(Snapshot, upgrade_past_snapshotting_is_refused_so_its_restore_point_stays_reachable) {
  TestCluster c({.settings = kSchedulerOff});
  int64_t id = CreateUpgradeRow(c);
  SetState(c, id, "applying");
  FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(run.state, "failed");
  EXPECT_NE(run.error.find("is applying"), std::string::npos) << run.error;
  EXPECT_FALSE(PathExists(SnapshotDir(c.info().agent_config, SnapshotIdFor(id))));

  FinishedJob missing = RunAgentJob(c, JobKind::kSnapshot, id + 1000);
  ASSERT_EQ(missing.state, "failed");
  EXPECT_NE(missing.error.find("does not exist"), std::string::npos) << missing.error;
}

TEST(Snapshot, retention_keeps_the_newest_n_and_never_an_in_flight_upgrades_snapshot) {
  TestCluster c({.settings = kSchedulerOff});
  AgentConfig config = c.info().agent_config;
  config.snapshot_retention = 2;
  RestartAgentWith(c, config);
  auto set_state = [&](int64_t id, const std::string& state) { SetState(c, id, state); };
  auto snapshot = [&](int64_t id) {
    FinishedJob run = RunAgentJob(c, JobKind::kSnapshot, id);
    EXPECT_EQ(run.state, "succeeded") << run.error << "\n" << run.EventText();
    return run;
  };

  int64_t in_flight = CreateUpgradeRow(c, "ext_a");
  snapshot(in_flight);
  set_state(in_flight, "applying");  // oldest, but its rollback may still need the snapshot
  int64_t second = CreateUpgradeRow(c, "ext_b");
  snapshot(second);
  set_state(second, "succeeded");
  int64_t third = CreateUpgradeRow(c, "ext_c");
  FinishedJob third_run = snapshot(third);
  set_state(third, "rolled_back");
  EXPECT_TRUE(HasEvent(third_run, "removed snapshot " + SnapshotIdFor(second))) << third_run.EventText();
  int64_t fourth = CreateUpgradeRow(c, "ext_d");
  FinishedJob fourth_run = snapshot(fourth);
  EXPECT_TRUE(HasEvent(fourth_run, "removed snapshot " + SnapshotIdFor(third))) << fourth_run.EventText();
  EXPECT_TRUE(HasEvent(fourth_run, "kept snapshots of in-flight upgrades")) << fourth_run.EventText();

  std::vector<std::string> ids;
  for (const auto& s : ListSnapshots(config)) ids.push_back(s.id);
  EXPECT_EQ(ids, (std::vector<std::string>{SnapshotIdFor(in_flight), SnapshotIdFor(fourth)}));
  EXPECT_NO_THROW(LoadSnapshotMeta(config, SnapshotIdFor(in_flight)));
  std::string log = c.AgentLog();
  EXPECT_NE(log.find("removed snapshot " + SnapshotIdFor(second)), std::string::npos) << log;
  EXPECT_NE(log.find("removed snapshot " + SnapshotIdFor(third)), std::string::npos) << log;
}

}  // namespace
}  // namespace safe_upgrade::testing
