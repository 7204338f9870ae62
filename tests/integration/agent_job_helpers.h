// Helpers for tests that drive the agent's jobs directly (no scheduler): insert an upgrade row,
// run a job to its end over gRPC, collect its events.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/fs_util.h"
#include "rpc/agent_client.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {

struct FinishedJob {
  std::string state;  // "succeeded", "failed" or "timeout"
  std::string error;
  // How the agent says a job that ran failed (kNone when it succeeded or did not start).
  JobFailureKind failure = JobFailureKind::kNone;
  nlohmann::json result = nlohmann::json::object();
  std::vector<AgentEvent> events;
  std::string EventText() const {
    std::string out;
    for (const auto& e : events)
      out += e.phase + " " + e.level + " " + e.message + " " + e.detail_json + "\n";
    return out;
  }
};

// An upgrade row as begin() would write it, in the given state, covering the extension in the
// control database (or in `databases`), with the worker kept out of the way (the tests run with
// safe_upgrade.enabled = off).
inline int64_t InsertUpgrade(const TestCluster& c, const std::string& extname, const std::string& from,
                             const std::string& to, const std::vector<std::string>& path,
                             const std::string& state,
                             const nlohmann::json& options = nlohmann::json::object(),
                             const std::vector<std::string>& databases = {}) {
  std::string array = "{";
  for (size_t i = 0; i < path.size(); ++i) array += (i ? "," : "") + std::string("\"") + path[i] + "\"";
  array += "}";
  nlohmann::json names = databases;
  return std::stoll(c.Scalar(
      "WITH u AS (INSERT INTO safe_upgrade.upgrades (extname, from_version, to_version, update_path, state, "
      "options) "
      "VALUES ($1, $2, $3, $4::text[], $5, $6::jsonb) RETURNING id), "
      "d AS (INSERT INTO safe_upgrade.upgrade_databases (upgrade_id, datname, from_version, update_path) "
      "SELECT u.id, n, $2, $4::text[] FROM u, jsonb_array_elements_text(CASE WHEN $7::jsonb = '[]' "
      "THEN jsonb_build_array(current_database()) ELSE $7::jsonb END) n) "
      "SELECT id FROM u",
      {extname, from, to, array, state, options.dump(), names.dump()}));
}

inline void SetState(const TestCluster& c, int64_t id, const std::string& state) {
  c.Scalar("UPDATE safe_upgrade.upgrades SET state = $2 WHERE id = $1::bigint RETURNING id",
           {std::to_string(id), state});
}

// Starts a job and follows it to its end, collecting every event.
inline FinishedJob RunAgentJob(const TestCluster& c, JobKind kind, int64_t id,
                               std::chrono::seconds timeout = std::chrono::seconds(300)) {
  FinishedJob out;
  auto client = AgentClient::Create(c.info().agent_config.listen, 10000);
  std::string job_id;
  auto err = client->StartJob(kind, id, job_id);
  if (!err.ok) {
    out.state = "failed";
    out.error = "StartJob refused: " + err.message;
    return out;
  }
  int64_t cursor = 0;
  out.state = "timeout";
  WaitUntil(
      [&] {
        AgentJob job;
        auto e = client->GetJob(job_id, cursor, job);
        if (!e.ok) return false;
        for (const auto& ev : job.events) out.events.push_back(ev);
        cursor = job.next_cursor;
        if (job.state == "running") return false;
        out.state = job.state;
        out.error = job.error;
        out.failure = job.failure;
        out.result = nlohmann::json::parse(job.result_json.empty() ? "{}" : job.result_json);
        return true;
      },
      timeout, std::chrono::milliseconds(100));
  // SU_TEST_DUMP_JOBS=1 prints every job's outcome, to read the reports the jobs produce.
  if (getenv("SU_TEST_DUMP_JOBS"))
    std::cerr << "--- job " << JobKindName(kind) << "-" << id << ": " << out.state << " " << out.error << "\n"
              << out.result.dump(2) << "\n";
  return out;
}

inline nlohmann::json ReadJournal(const TestCluster& c, int64_t id) {
  std::string path = JoinPath(c.info().agent_config.JournalDir(), "upgrade-" + std::to_string(id) + ".json");
  return PathExists(path) ? nlohmann::json::parse(ReadFile(path)) : nlohmann::json::object();
}

// The snapshot an upgrade's dry run clones, taken by the agent's snapshot job.
inline void TakeSnapshot(const TestCluster& c, int64_t id) {
  SetState(c, id, "snapshotting");
  auto job = RunAgentJob(c, JobKind::kSnapshot, id);
  ASSERT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
}

// An upgrade as the scheduler leaves it when it starts the apply job: a verified snapshot, then a
// restore point after it whose WAL segment is archived, state applying.
inline int64_t ReadyToApply(const TestCluster& c, const std::string& ext, const std::string& from,
                            const std::string& to, const std::vector<std::string>& path,
                            const nlohmann::json& options = nlohmann::json::object()) {
  int64_t id = InsertUpgrade(c, ext, from, to, path, "snapshotting", options);
  TakeSnapshot(c, id);
  std::string segment = c.Scalar(
      "WITH rp AS (SELECT pg_create_restore_point('su_test_' || $1) AS lsn) "
      "INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, wal_segment) "
      "SELECT $1::bigint, 'su_test_' || $1, rp.lsn, ('x' || substr(pg_walfile_name(rp.lsn), 1, "
      "8))::bit(32)::int, "
      "pg_walfile_name(rp.lsn) FROM rp RETURNING wal_segment",
      {std::to_string(id)});
  c.Exec("SELECT pg_switch_wal()");
  EXPECT_TRUE(WaitUntil([&] { return PathExists(JoinPath(c.info().agent_config.wal_archive_dir, segment)); },
                        std::chrono::seconds(60)))
      << "WAL segment " << segment << " was not archived";
  SetState(c, id, "applying");
  return id;
}

}  // namespace safe_upgrade::testing
