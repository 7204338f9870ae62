// The object-store harness end to end, without the agent: a throwaway cluster archives and backs
// up with pgBackRest into s3rver over verified TLS, a restore into another directory serves the
// rows written before the last backup, and a stopped store makes `pgbackrest check` fail (the
// "repository unreachable" fault later tests inject).
#include "object_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kStanza = "su";

// A plain initdb cluster in a temporary directory, run as the service user, archiving with
// pgBackRest into the store; and a pgbackrest.conf naming both.
class BackrestCluster {
 public:
  explicit BackrestCluster(const ObjectStoreServer& store) {
    std::string tmpl = "/tmp/su-pgbr-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in /tmp");
    root_ = tmpl;
    chmod(root_.c_str(), 0755);
    user_ = ServiceUserForCaller();
    for (const char* d : {"socket", "log", "lock", "spool"}) EnsureDir(JoinPath(root_, d), 0700);
    if (!user_.empty()) ChownTree(root_, user_);
    data_dir_ = JoinPath(root_, "data");
    config_ = JoinPath(root_, "pgbackrest.conf");
    port_ = FindFreePort();

    std::string conf = "[global]\n";
    for (const auto& line : store.RepoOptions()) conf += line + "\n";
    conf += "repo1-retention-full=2\n";
    conf +=
        "log-path=" + Path("log") + "\nlock-path=" + Path("lock") + "\nspool-path=" + Path("spool") + "\n";
    conf += "log-level-console=warn\nlog-level-file=detail\n";
    // Fail fast when the store is gone instead of retrying for a minute.
    conf += "io-timeout=5\narchive-timeout=30\n";
    conf += std::string("\n[") + kStanza + "]\npg1-path=" + data_dir_ +
            "\npg1-port=" + std::to_string(port_) + "\npg1-socket-path=" + Path("socket") + "\n";
    AtomicWriteFile(config_, conf, 0644);

    Run({JoinPath(kPgBinDir, "initdb"), "-D", data_dir_, "-U", "postgres", "--auth=trust", "--no-sync"});
    std::string settings =
        "\nport = " + std::to_string(port_) + "\nunix_socket_directories = '" + Path("socket") +
        "'\nlisten_addresses = ''\narchive_mode = on\narchive_command = 'pgbackrest --config=" + config_ +
        " --stanza=" + kStanza + " archive-push %p'\n";
    AtomicWriteFile(JoinPath(data_dir_, "postgresql.conf"),
                    ReadFile(JoinPath(data_dir_, "postgresql.conf")) + settings, 0600);
    if (!user_.empty()) ChownTree(data_dir_, user_);
    StartServer(data_dir_, port_);
  }

  ~BackrestCluster() {
    bool failed = ::testing::Test::HasFailure() || std::uncaught_exceptions() > 0;
    for (const auto& dir : started_) {
      if (failed) std::cerr << "--- " << dir << ".log ---\n" << FileTail(dir + ".log", 8000) << "\n";
      RunProcess({JoinPath(kPgBinDir, "pg_ctl"), "-D", dir, "-m", "immediate", "-w", "stop"}, Options());
    }
    if (failed) {
      ProcessResult logs = RunProcess({"sh", "-c", "tail -n 60 " + ShellQuote(Path("log")) + "/*.log"});
      std::cerr << "--- pgbackrest logs ---\n" << logs.out << "\n";
    }
    if (getenv("SU_KEEP_TEST_DIRS")) {
      std::cerr << "test directory kept: " << root_ << "\n";
      return;
    }
    try {
      RemoveTree(root_);
    } catch (...) {
    }
  }

  std::string Path(const std::string& name) const { return JoinPath(root_, name); }
  const std::string& data_dir() const { return data_dir_; }
  int port() const { return port_; }

  ProcessResult Run(const std::vector<std::string>& argv) const { return RunChecked(argv, Options()); }
  ProcessResult Backrest(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"pgbackrest", "--config=" + config_, std::string("--stanza=") + kStanza};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, Options());
  }
  std::string Psql(int port, const std::string& sql) const {
    return Run({JoinPath(kPgBinDir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", Path("socket"), "-p",
                std::to_string(port), "-U", "postgres", "-d", "postgres", "-c", sql})
        .out;
  }
  // Starts a server on dir; extra: more -c settings for the postmaster's command line.
  void StartServer(const std::string& dir, int port, const std::string& extra = "") {
    Run({JoinPath(kPgBinDir, "pg_ctl"), "-D", dir, "-l", dir + ".log", "-w", "-t", "120", "-o",
         "-p " + std::to_string(port) + " " + extra, "start"});
    started_.push_back(dir);
  }

 private:
  ProcessOptions Options() const {
    ProcessOptions opt;
    opt.run_as = user_;
    opt.cwd = root_;
    opt.timeout = std::chrono::minutes(10);
    return opt;
  }

  std::string root_, user_, data_dir_, config_;
  int port_ = 0;
  std::vector<std::string> started_;
};

class ObjectStore : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = ObjectStoreServer::Unavailable();
    if (!why.empty()) GTEST_SKIP() << why;
    store_ = std::make_unique<ObjectStoreServer>();
    cluster_ = std::make_unique<BackrestCluster>(*store_);
    ProcessResult created = cluster_->Backrest({"stanza-create"});
    ASSERT_TRUE(created.Ok()) << created.Describe("pgbackrest stanza-create");
  }
  void TearDown() override {
    cluster_.reset();  // the cluster's archive_command needs the store until it stops
    store_.reset();
  }

  std::unique_ptr<ObjectStoreServer> store_;
  std::unique_ptr<BackrestCluster> cluster_;
};

TEST(ObjectStoreHarness, serves_tls_with_a_ca_file_the_service_user_can_read) {
  std::string why = ObjectStoreServer::Unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  ObjectStoreServer store;
  EXPECT_TRUE(store.Running());
  auto options = store.RepoOptions();
  EXPECT_NE(std::find(options.begin(), options.end(), "repo1-storage-verify-tls=y"), options.end());
  EXPECT_NE(std::find(options.begin(), options.end(), "repo1-storage-ca-file=" + store.ca_file()),
            options.end());
  struct stat st {};
  ASSERT_EQ(stat(store.ca_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0004, 0004u) << "the postgres OS user must be able to read the CA file";
}

TEST_F(ObjectStore, full_and_incremental_backups_restore_rows_written_before_the_last_backup) {
  ProcessResult check = cluster_->Backrest({"check"});
  ASSERT_TRUE(check.Ok()) << check.Describe("pgbackrest check");

  cluster_->Psql(cluster_->port(), "CREATE TABLE marker(id int PRIMARY KEY, note text)");
  auto started = std::chrono::steady_clock::now();
  ProcessResult full = cluster_->Backrest({"backup", "--type=full"});
  ASSERT_TRUE(full.Ok()) << full.Describe("pgbackrest backup --type=full");
  auto full_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  cluster_->Psql(cluster_->port(), "INSERT INTO marker VALUES (1, 'after full, before incr')");
  started = std::chrono::steady_clock::now();
  ProcessResult incr = cluster_->Backrest({"backup", "--type=incr"});
  ASSERT_TRUE(incr.Ok()) << incr.Describe("pgbackrest backup --type=incr");
  auto incr_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cerr << "full backup " << full_seconds << " s, incremental " << incr_seconds << " s\n";

  ProcessResult info = cluster_->Backrest({"info"});
  ASSERT_TRUE(info.Ok()) << info.Describe("pgbackrest info");
  EXPECT_NE(info.out.find("full backup"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("incr backup"), std::string::npos) << info.out;

  // The restored copy must not archive into the production stanza: after promotion it would push
  // a new timeline's WAL there.
  std::string restored = cluster_->Path("restored");
  ProcessResult restore = cluster_->Backrest({"restore", "--pg1-path=" + restored, "--type=immediate",
                                              "--target-action=promote", "--archive-mode=off"});
  ASSERT_TRUE(restore.Ok()) << restore.Describe("pgbackrest restore");
  int restored_port = FindFreePort();
  cluster_->StartServer(restored, restored_port);
  bool promoted = WaitUntil(
      [&] { return cluster_->Psql(restored_port, "SELECT pg_is_in_recovery()") == "f\n"; }, 120s, 200ms);
  ASSERT_TRUE(promoted) << "the restored cluster did not finish recovery";
  EXPECT_EQ(cluster_->Psql(restored_port, "SELECT id, note FROM marker ORDER BY id"),
            "1|after full, before incr\n");
}

TEST_F(ObjectStore, check_fails_when_the_store_is_stopped) {
  ProcessResult before = cluster_->Backrest({"check"});
  ASSERT_TRUE(before.Ok()) << before.Describe("pgbackrest check");

  store_->Stop();
  ASSERT_FALSE(store_->Running());
  auto started = std::chrono::steady_clock::now();
  ProcessResult after = cluster_->Backrest({"check"});
  std::cerr << "check with the store stopped: exit " << after.exit_code << " after "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
            << " s: " << after.err.substr(0, 300) << "\n";
  EXPECT_FALSE(after.Ok()) << "pgbackrest check succeeded with the store stopped:\n"
                           << after.out << after.err;
  EXPECT_NE(after.exit_code, 0);

  // The store comes back on the same port with the same objects, and the repository with it.
  store_->Start();
  ProcessResult again = cluster_->Backrest({"check"});
  EXPECT_TRUE(again.Ok()) << again.Describe("pgbackrest check after the store restarted");
}

}  // namespace
}  // namespace safe_upgrade::testing
