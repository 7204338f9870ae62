// Smoke test of `make bench` (bench/run.sh): one run of every measurement at the smallest size,
// so that the benchmark cannot rot unnoticed. It checks that the bench runs end to end and writes
// a results file in which every measurement is present and numeric; it asserts nothing about the
// figures themselves (the targets are the bench's own verdicts, not test failures).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "fs_util.h"
#include "process.h"
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

TEST(BenchSmoke, bench_runs_end_to_end_at_a_tiny_size_and_writes_every_measurement) {
  if (geteuid() != 0 && (!HaveCommand("pgbackrest") || !HaveCommand("gnuplot")))
    GTEST_SKIP() << "pgbackrest and gnuplot are needed (as root the bench installs them)";
  std::string source = SourceDir();
  ASSERT_FALSE(source.empty()) << "CMAKE_HOME_DIRECTORY not found in " << BuildDir() << "/CMakeCache.txt";
  std::string script = JoinPath(source, "bench/run.sh");
  ASSERT_TRUE(PathExists(script)) << script;

  std::string scratch = JoinPath(fs::temp_directory_path().string(), "su-bench-smoke-" + std::to_string(getpid()));
  std::string results = JoinPath(scratch, "results");
  ProcessOptions opt;
  opt.env = {{"BUILD_DIR", BuildDir()},
             {"BENCH_SIZES", "tiny"},
             {"BENCH_RUNS", "1"},
             {"BENCH_IDLE_S", "3"},
             {"BENCH_TPS_S", "3"},
             {"BENCH_CHART", "1"},
             {"BENCH_WORK_DIR", JoinPath(scratch, "work")},
             {"BENCH_RESULTS_DIR", results}};
  opt.timeout = std::chrono::minutes(12);
  ProcessResult r = RunProcess({"bash", script}, opt);
  ASSERT_TRUE(r.Ok()) << r.Describe("bench/run.sh") << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
  EXPECT_NE(r.out.find("targets (issue 7):"), std::string::npos) << r.out;
  // The bench cleans up after itself: no cluster and no scratch left behind.
  EXPECT_FALSE(PathExists(JoinPath(scratch, "work")));

  std::string json_path, png_path;
  for (const auto& e : fs::directory_iterator(results)) {
    if (e.path().extension() == ".json") json_path = e.path().string();
    if (e.path().extension() == ".png") png_path = e.path().string();
  }
  ASSERT_FALSE(json_path.empty()) << "no results JSON in " << results;
  EXPECT_FALSE(png_path.empty()) << "no chart in " << results;
  if (!png_path.empty()) {
    EXPECT_GT(fs::file_size(png_path), 1000u);
  }

  json doc;
  ASSERT_NO_THROW(doc = json::parse(ReadFile(json_path))) << ReadFile(json_path);
  ASSERT_TRUE(doc["sizes"].is_array());
  ASSERT_EQ(doc["sizes"].size(), 1u);
  const json& s = doc["sizes"][0];
  ExpectNumber(s, "size_mb", "sizes[0]");
  for (const char* k : {"ours_s", "pgbackrest_full_s", "cp_a_s"}) ExpectSeries(s["snapshot"], k, "snapshot");
  for (const char* k :
       {"ours_median_s", "pgbackrest_full_median_s", "cp_a_median_s", "ours_vs_pgbackrest", "ours_vs_cp_a"})
    ExpectNumber(s["snapshot"], k, "snapshot");
  for (const char* k : {"ours_s", "raw_copy_start_s"})
    ExpectSeries(s["dry_run_provisioning"], k, "dry_run_provisioning");
  for (const char* k : {"ours_median_s", "raw_copy_start_median_s", "ours_vs_raw"})
    ExpectNumber(s["dry_run_provisioning"], k, "dry_run_provisioning");
  for (const char* k : {"ours_s", "pgbackrest_delta_s", "pgbackrest_full_s"})
    ExpectSeries(s["rollback_rto"], k, "rollback_rto");
  for (const char* k : {"ours_median_s", "pgbackrest_delta_median_s", "pgbackrest_full_median_s",
                        "ours_vs_pgbackrest_delta", "ours_vs_pgbackrest_full"})
    ExpectNumber(s["rollback_rto"], k, "rollback_rto");
  for (const char* k : {"baseline_tps", "during_snapshot_tps", "ratio", "snapshot_window_s"})
    ExpectNumber(s["production_impact"], k, "production_impact");
  for (const char* k : {"cpu_fraction_of_core", "wakeups_per_s", "wakeups_per_min", "seconds"})
    ExpectNumber(doc["idle_worker"], k, "idle_worker");

  // Every target carries a verdict; with one size the flatness target cannot be evaluated.
  ASSERT_TRUE(doc["targets"].is_array());
  EXPECT_GE(doc["targets"].size(), 7u);
  for (const auto& t : doc["targets"]) {
    ASSERT_TRUE(t.contains("met")) << t.dump();
    EXPECT_TRUE(t["met"].is_boolean() || t["met"].is_null()) << t.dump();
  }
  RemoveTree(scratch);
}

}  // namespace
}  // namespace safe_upgrade::testing
