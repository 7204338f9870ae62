// Smoke test of `make bench` (bench/run.sh): one run of every measurement at the smallest size, for
// each snapshot method (reflink only as root, on a loop device), so that the benchmark cannot rot
// unnoticed. It checks that the bench runs end to end and writes a results file in which every
// measurement is present and numeric: the downtime a writing client saw, the whole upgrade's
// duration, its peak extra disk and the WAL written meanwhile, against pgBackRest in the same run.
// It asserts nothing about the figures themselves (the targets are the bench's own verdicts, not
// test failures), except that a rollback is an outage the client saw.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "base/fs_util.h"
#include "base/process.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The source tree this build was configured from, read from the build's CMake cache, so the test
// runs the bench of the same checkout whatever the working directory.
std::string SourceDir() {
  std::string cache = ReadFile(JoinPath(BuildDir(), "CMakeCache.txt"));
  std::smatch m;
  static const std::regex re(R"(CMAKE_HOME_DIRECTORY:INTERNAL=([^\n]+))");
  if (!std::regex_search(cache, m, re)) return "";
  return m[1];
}

bool HaveCommand(const std::string& name) {
  return RunProcess({"sh", "-c", "command -v " + name + " >/dev/null"}).Ok();
}

void ExpectNumber(const json& obj, const std::string& key, const std::string& where) {
  ASSERT_TRUE(obj.contains(key)) << where << " has no " << key << ": " << obj.dump();
  EXPECT_TRUE(obj[key].is_number()) << where << "." << key << " is not a number: " << obj[key].dump();
  if (obj[key].is_number()) {
    EXPECT_GE(obj[key].get<double>(), 0.0) << where << "." << key;
  }
}

void ExpectSeries(const json& obj, const std::string& key, const std::string& where) {
  ASSERT_TRUE(obj.contains(key) && obj[key].is_array()) << where << " has no array " << key << ": " << obj.dump();
  ASSERT_EQ(obj[key].size(), 1u) << where << "." << key;
  EXPECT_TRUE(obj[key][0].is_number()) << where << "." << key << ": " << obj[key].dump();
}

// The measurements of one method's cell (one size, one run each).
void ExpectCell(const json& c) {
  std::string where = "cell " + c.value("method", std::string("?"));
  ExpectNumber(c, "size_mb", where);
  ExpectNumber(c, "cluster_bytes", where);
  ExpectNumber(c, "baseline_tps", where);
  ASSERT_TRUE(c["ours"]["runs"].is_array() && c["ours"]["runs"].size() == 1u) << c.dump();
  const json& run = c["ours"]["runs"][0];
  EXPECT_EQ(run.value("rollback_path", std::string()).empty(), false) << run.dump();
  for (const char* k :
       {"downtime_s", "upgrade_s", "upgrade_excl_approval_s", "snapshot_s", "tps_ratio", "peak_extra_bytes",
        "tree_peak_extra_bytes", "wal_bytes", "disk_limit_bytes", "max_accepted_write_latency_s"})
    ExpectNumber(run, k, where + " run");
  // The rollback restarts the server: the client must have seen refused writes, and then an
  // accepted one (an outage with an end).
  EXPECT_GE(run.value("outages", 0), 1) << run.dump();
  EXPECT_TRUE(run["unfinished_outage"].is_null()) << run.dump();
  if (run["downtime_s"].is_number()) EXPECT_GT(run["downtime_s"].get<double>(), 0.0);
  if (run["upgrade_s"].is_number() && run["downtime_s"].is_number())
    EXPECT_GT(run["upgrade_s"].get<double>(), run["downtime_s"].get<double>());
  EXPECT_GT(run.value("disk_samples", 0), 1) << run.dump();
  for (const char* k : {"downtime_s", "upgrade_s", "upgrade_excl_approval_s", "snapshot_s", "tps_ratio",
                        "peak_extra_bytes", "wal_bytes", "disk_limit_bytes", "peak_extra_vs_limit"})
    ExpectNumber(c["ours"]["median"], k, where + " median");
  const json& pb = c["pgbackrest"];
  ExpectSeries(pb, "full_backup_s", where + " pgbackrest");
  ExpectNumber(pb, "full_backup_median_s", where + " pgbackrest");
  ExpectNumber(pb, "tps_ratio_during_backup", where + " pgbackrest");
  ASSERT_TRUE(pb["delta_restore"].is_array() && pb["delta_restore"].size() == 1u) << pb.dump();
  ExpectNumber(pb["delta_restore"][0], "downtime_s", where + " pgbackrest delta");
  ExpectNumber(pb["delta_restore"][0], "stop_to_accepted_write_s", where + " pgbackrest delta");
  ExpectNumber(pb, "delta_downtime_median_s", where + " pgbackrest");
  ExpectSeries(c["raw_copy"], "s", where + " raw_copy");
  for (const char* k :
       {"downtime_vs_pgbackrest_delta", "snapshot_vs_pgbackrest_full", "snapshot_vs_raw_copy"})
    ExpectNumber(c["ratios"], k, where + " ratios");
}

TEST(BenchSmoke, bench_runs_end_to_end_at_a_tiny_size_and_writes_every_measurement) {
  if (geteuid() != 0 && (!HaveCommand("pgbackrest") || !HaveCommand("gnuplot") || !HaveCommand("jq")))
    GTEST_SKIP() << "pgbackrest, gnuplot and jq are needed (as root the bench installs them)";
  std::string source = SourceDir();
  ASSERT_FALSE(source.empty()) << "CMAKE_HOME_DIRECTORY not found in " << BuildDir() << "/CMakeCache.txt";
  std::string script = JoinPath(source, "bench/run.sh");
  ASSERT_TRUE(PathExists(script)) << script;

  std::string scratch = JoinPath(fs::temp_directory_path().string(), "su-bench-smoke-" + std::to_string(getpid()));
  std::string results = JoinPath(scratch, "results");
  ProcessOptions opt;
  opt.env = {{"BUILD_DIR", BuildDir()},
             {"BENCH_METHODS", "basebackup reflink"},
             {"BENCH_SIZES", "tiny"},
             {"BENCH_REFLINK_SIZES", "tiny"},
             {"BENCH_RUNS", "1"},
             {"BENCH_IDLE_S", "3"},
             {"BENCH_TPS_S", "3"},
             {"BENCH_CHART", "1"},
             {"BENCH_WORK_DIR", JoinPath(scratch, "work")},
             {"BENCH_RESULTS_DIR", results}};
  opt.timeout = std::chrono::minutes(15);
  ProcessResult r = RunProcess({"bash", script}, opt);
  ASSERT_TRUE(r.Ok()) << r.Describe("bench/run.sh") << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
  EXPECT_NE(r.out.find("targets (issue 3/7"), std::string::npos) << r.out;
  // The bench cleans up after itself: no cluster, no mount and no scratch left behind.
  EXPECT_FALSE(PathExists(JoinPath(scratch, "work")));

  std::string json_path;
  int charts = 0;
  for (const auto& e : fs::directory_iterator(results)) {
    if (e.path().extension() == ".json") json_path = e.path().string();
    if (e.path().extension() == ".png") {
      ++charts;
      EXPECT_GT(fs::file_size(e.path()), 1000u) << e.path();
    }
  }
  ASSERT_FALSE(json_path.empty()) << "no results JSON in " << results;
  // One chart per figure: downtime, upgrade duration, peak disk, tps, snapshot.
  EXPECT_EQ(charts, 5) << "charts in " << results;

  json doc;
  ASSERT_NO_THROW(doc = json::parse(ReadFile(json_path))) << ReadFile(json_path);
  ASSERT_TRUE(doc["cells"].is_array());
  const json* basebackup = nullptr;
  const json* reflink = nullptr;
  for (const auto& c : doc["cells"]) {
    if (c["method"] == "basebackup") basebackup = &c;
    if (c["method"] == "reflink") reflink = &c;
  }
  ASSERT_NE(basebackup, nullptr) << doc["cells"].dump();
  ExpectCell(*basebackup);
  EXPECT_EQ(basebackup->value("methods_used", json::array()), json::array({"basebackup"}))
      << basebackup->dump();
  if (reflink) {
    ExpectCell(*reflink);
    EXPECT_EQ(reflink->value("filesystem", std::string()), "xfs") << reflink->dump();
  } else {
    // Skipped (not root, or no loop devices here): the bench must say why.
    bool said_why = false;
    for (const auto& s : doc["skipped"])
      if (s["method"] == "reflink" && !s.value("reason", std::string()).empty()) said_why = true;
    EXPECT_TRUE(said_why) << doc["skipped"].dump();
  }
  for (const char* k : {"cpu_fraction_of_core", "wakeups_per_s", "wakeups_per_min", "seconds"})
    ExpectNumber(doc["idle_worker"], k, "idle_worker");

  // Every target carries a verdict. Reflink's can be met only when the agent took reflink snapshots.
  ASSERT_TRUE(doc["targets"].is_array());
  EXPECT_GE(doc["targets"].size(), 9u);
  for (const auto& t : doc["targets"]) {
    ASSERT_TRUE(t.contains("met")) << t.dump();
    EXPECT_TRUE(t["met"].is_boolean() || t["met"].is_null()) << t.dump();
    bool about_reflink = t["name"].get<std::string>().find("reflink") != std::string::npos;
    bool reflink_used = reflink && reflink->value("methods_used", json::array()) == json::array({"reflink"});
    if (about_reflink && !reflink_used) EXPECT_TRUE(t["met"].is_null()) << t.dump();
  }
  RemoveTree(scratch);
}

}  // namespace
}  // namespace safe_upgrade::testing
