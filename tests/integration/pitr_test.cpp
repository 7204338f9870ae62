// Point-in-time recovery from an agent snapshot plus the agent's WAL archive, in the manner of
// PostgreSQL's src/test/recovery/t/003_recovery_targets.pl: marker rows written in batches with
// a named restore point after each batch, then a restore to each target asserting the exact rows.
// Also the ordering invariant: a restore point made before the backup cannot be reached from it.
//
// Each restore is an isolated copy (own port and socket directory, archive_mode = off, no
// scheduler) started as the service user with restore_command = the agent's wal-fetch.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agent_job_helpers.h"
#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/socket_only.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// A server restored from a snapshot copy; stopped (immediate) when it goes out of scope.
class RestoredServer {
 public:
  RestoredServer(std::string data_dir, std::string socket_dir, int port, std::string log_path, std::string os_user)
      : data_dir_(std::move(data_dir)),
        socket_dir_(std::move(socket_dir)),
        port_(port),
        log_path_(std::move(log_path)),
        control_(kPgBinDir, data_dir_, "pg_ctl", std::move(os_user), log_path_) {}
  ~RestoredServer() {
    try {
      control_.Stop("immediate");
    } catch (...) {
    }
  }

  // Starts recovery; false when the server did not come up (recovery failed).
  bool Start() {
    try {
      control_.Start({}, 180s);
    } catch (const std::exception& e) {
      start_error_ = e.what();
      return false;
    }
    // pg_ctl returns once connections are accepted, which a hot standby does as soon as it is
    // consistent: long before promotion, and also when recovery is about to fail.
    bool promoted = false;
    WaitUntil(
        [&] {
          if (!control_.Running()) return true;
          promoted = Connect()->Exec("SELECT pg_is_in_recovery()").Scalar() == "f";
          return promoted;
        },
        120s);
    if (!promoted) start_error_ = "the server stopped during recovery";
    return promoted;
  }
  std::unique_ptr<PgConn> Connect() const {
    return std::make_unique<PgConn>(ConnInfo(socket_dir_, port_, "postgres", "postgres", "pitr-test"));
  }
  std::string Scalar(const std::string& sql) const { return Connect()->Exec(sql).Scalar(); }
  std::string Log() const {
    try {
      return ReadFile(log_path_);
    } catch (...) {
      return "";
    }
  }
  const std::string& start_error() const { return start_error_; }

 private:
  std::string data_dir_, socket_dir_;
  int port_;
  std::string log_path_;
  ServerControl control_;
  std::string start_error_;
};

class Pitr : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<TestCluster>(ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}});
  }
  const TestCluster& c() const { return *cluster_; }
  std::string Archive() const { return c().info().agent_config.wal_archive_dir; }

  // Takes a snapshot through the agent, as the scheduler would; returns its data directory.
  std::string SnapshotThroughAgent() {
    int64_t id = InsertUpgrade(c(), "fixture_ext", "1.0", "1.1", {"1.0", "1.1"}, "snapshotting");
    auto job = RunAgentJob(c(), JobKind::kSnapshot, id);
    EXPECT_EQ(job.state, "succeeded") << job.error << "\n" << job.EventText();
    return SnapshotDataDir(c().info().agent_config, SnapshotIdFor(id));
  }

  void WriteBatch(int batch) {
    c().Exec("INSERT INTO marker SELECT " + std::to_string(batch) + ", g FROM generate_series(1, 3) g");
  }

  // Ends the current segment and waits until the archive holds it (so it holds all before it).
  void SwitchAndWaitArchived() {
    std::string seg = c().Scalar("SELECT pg_walfile_name(pg_switch_wal())");
    ASSERT_TRUE(WaitUntil([&] { return PathExists(JoinPath(Archive(), seg)); }, 60s))
        << seg << " was not archived:\n"
        << c().ServerLog();
  }

  // A copy of the snapshot set up to recover to target_name and promote.
  std::unique_ptr<RestoredServer> PrepareRestore(const std::string& snapshot_data, const std::string& target_name,
                                                 const std::string& label) {
    std::string root = c().ScratchDir("restore-" + label);
    std::string data = JoinPath(root, "data"), run = JoinPath(root, "run");
    CopyTree(snapshot_data, data);
    EnsureDir(run, 0755);
    int port = FindFreePort();
    std::string agent = JoinPath(JoinPath(c().info().dir, "bin"), "safe-upgrade-agent");
    std::string restore_command =
        ShellQuote(agent) + " wal-fetch --config " + ShellQuote(c().info().agent_config_path) + " %f %p";
    // Replaces the sandbox's managed block copied with the backup (its archive_command, port,
    // socket directory and preload list are production's).
    auto settings = SocketOnlySettings(port, run);
    settings.insert({{"archive_mode", "off"},
                     {"restore_command", ConfQuote(restore_command)},
                     {"recovery_target_name", ConfQuote(target_name)},
                     {"recovery_target_action", "'promote'"},
                     {"shared_preload_libraries", "''"},
                     {"safe_upgrade.enabled", "off"},
                     {"log_line_prefix", "'%m [%p] '"}});
    WriteManagedSettings(data, settings);
    AtomicWriteFile(JoinPath(data, "recovery.signal"), "", 0600);
    EXPECT_FALSE(PathExists(JoinPath(data, "standby.signal")));
    ChownTree(root, c().info().os_user);
    return std::make_unique<RestoredServer>(data, run, port, JoinPath(root, "postgres.log"), c().info().os_user);
  }

  std::unique_ptr<TestCluster> cluster_;
};

std::string ExpectedRows(int last_batch) {
  std::string out;
  for (int b = 0; b <= last_batch; ++b)
    for (int n = 1; n <= 3; ++n) out += (out.empty() ? "" : ",") + std::to_string(b) + ":" + std::to_string(n);
  return out;
}

const char* kRowsSql = "SELECT coalesce(string_agg(batch || ':' || n, ',' ORDER BY batch, n), '') FROM marker";

TEST_F(Pitr, restore_to_each_named_restore_point_has_exactly_the_rows_written_before_it) {
  c().Exec("CREATE TABLE marker (batch int, n int)");
  WriteBatch(0);
  std::string snapshot = SnapshotThroughAgent();
  for (int batch = 1; batch <= 3; ++batch) {
    WriteBatch(batch);
    c().Exec("SELECT pg_create_restore_point('pitr_rp_" + std::to_string(batch) + "')");
  }
  WriteBatch(4);  // after the last restore point: no restore may contain it
  SwitchAndWaitArchived();

  for (int batch = 1; batch <= 3; ++batch) {
    std::string target = "pitr_rp_" + std::to_string(batch);
    auto restored = PrepareRestore(snapshot, target, "rp" + std::to_string(batch));
    ASSERT_TRUE(restored->Start()) << restored->start_error() << "\n" << restored->Log();
    EXPECT_EQ(restored->Scalar(kRowsSql), ExpectedRows(batch)) << target;
    EXPECT_NE(restored->Log().find("recovery stopping at restore point \"" + target + "\""), std::string::npos)
        << restored->Log();
    EXPECT_NE(restored->Log().find("selected new timeline ID: 2"), std::string::npos) << restored->Log();
  }
  // The restored copies promoted onto timeline 2 with archive_mode = off: nothing of theirs
  // reached production's archive.
  EXPECT_FALSE(PathExists(JoinPath(Archive(), "00000002.history")));
  EXPECT_EQ(c().Scalar(kRowsSql), ExpectedRows(4)) << "production lost rows";
}

TEST_F(Pitr, restore_point_created_before_the_backup_is_unreachable_from_it) {
  c().Exec("CREATE TABLE marker (batch int, n int)");
  WriteBatch(0);
  c().Exec("SELECT pg_create_restore_point('pitr_before_backup')");
  SwitchAndWaitArchived();
  std::string snapshot = SnapshotThroughAgent();
  WriteBatch(1);
  c().Exec("SELECT pg_create_restore_point('pitr_after_backup')");
  SwitchAndWaitArchived();

  auto before = PrepareRestore(snapshot, "pitr_before_backup", "before");
  EXPECT_FALSE(before->Start()) << "recovery reached a restore point older than the backup";
  EXPECT_NE(before->Log().find("recovery ended before configured recovery target was reached"), std::string::npos)
      << before->Log();

  // The same snapshot reaches the restore point made after it: the order is what matters.
  auto after = PrepareRestore(snapshot, "pitr_after_backup", "after");
  ASSERT_TRUE(after->Start()) << after->start_error() << "\n" << after->Log();
  EXPECT_EQ(after->Scalar(kRowsSql), ExpectedRows(1));
}

TEST_F(Pitr, restore_point_that_was_never_created_fails_recovery_instead_of_promoting) {
  c().Exec("CREATE TABLE marker (batch int, n int)");
  WriteBatch(0);
  std::string snapshot = SnapshotThroughAgent();
  WriteBatch(1);
  SwitchAndWaitArchived();
  auto restored = PrepareRestore(snapshot, "pitr_no_such_point", "none");
  EXPECT_FALSE(restored->Start()) << "recovery promoted without reaching its target";
  EXPECT_NE(restored->Log().find("recovery ended before configured recovery target was reached"),
            std::string::npos)
      << restored->Log();
}

}  // namespace
}  // namespace safe_upgrade::testing
