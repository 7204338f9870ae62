// Helpers for tests that run the safe-upgrade command line as a separate process: run it to its
// end, or in the background while the test acts on the cluster.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/config.h"
#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {

inline std::string CliBinary() { return JoinPath(BuildDir(), "safe-upgrade"); }

inline ProcessResult Cli(const std::vector<std::string>& args,
                         const std::map<std::string, std::string>& env = {},
                         std::chrono::milliseconds timeout = std::chrono::minutes(10)) {
  std::vector<std::string> argv = {CliBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opt;
  opt.env = env;
  opt.timeout = timeout;
  return RunProcess(argv, opt);
}

// The CLI against a cluster, by --dsn.
inline ProcessResult Cli(const TestCluster& c, std::vector<std::string> args,
                         std::chrono::milliseconds timeout = std::chrono::minutes(10)) {
  args.insert(args.begin(), {"--dsn", c.ConnInfo()});
  return Cli(args, {}, timeout);
}

inline nlohmann::json ParseJson(const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "):\n" << text;
    return nlohmann::json();
  }
}

inline int FreePort() { return FindFreePort(); }

// A CLI process running in the background, so a test can act while it follows an upgrade.
class Background {
 public:
  Background(const std::vector<std::string>& args, const std::string& dir) {
    out_path_ = JoinPath(dir, "cli.out." + std::to_string(counter_));
    err_path_ = JoinPath(dir, "cli.err." + std::to_string(counter_++));
    std::vector<std::string> argv = {CliBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in, 0);
      dup2(out, 1);
      dup2(err, 2);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    close(out);
    close(err);
    close(in);
  }
  ~Background() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int sig) { kill(pid_, sig); }
  // The exit code, or -1 after a timeout (the process is then killed).
  int Wait(std::chrono::seconds timeout = std::chrono::seconds(600)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        exited_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::string Out() const { return ReadOrEmpty(out_path_); }
  std::string Err() const { return ReadOrEmpty(err_path_); }

 private:
  static std::string ReadOrEmpty(const std::string& path) {
    try {
      return ReadFile(path);
    } catch (...) {
      return "";
    }
  }
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string out_path_, err_path_;
};

inline int64_t LatestUpgradeId(const TestCluster& c) {
  std::string id = c.Scalar("SELECT max(id)::text FROM safe_upgrade.upgrades");
  return id.empty() ? 0 : std::stoll(id);
}

inline std::string StateOf(const TestCluster& c, int64_t id) {
  return c.Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(id)});
}

// Fixture extensions are installed by `make -C tests/fixtures install` (make check does it).
inline void RequireExtension(const TestCluster& c, const std::string& name) {
  auto conn = c.Connect();
  ASSERT_TRUE(ExtensionAvailable(*conn, name))
      << name << " is not installed; run: make -C tests/fixtures install (as root)";
}

// hstore 1.4 with data and a view that uses its operators, as a real schema would.
inline void CreateHstoreSchema(const TestCluster& c) {
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE TABLE accounts (id serial PRIMARY KEY, attrs hstore);"
      "INSERT INTO accounts (attrs) SELECT hstore(ARRAY['plan', 'n'], ARRAY['pro', g::text]) "
      "  FROM generate_series(1, 2000) g;"
      "CREATE VIEW pro_accounts AS SELECT id FROM accounts WHERE attrs -> 'plan' = 'pro';");
}

// The `status ID --json` output of a finished upgrade: its state, the `run` exit code for that
// state, and a section that must be an object.
inline void ExpectStatusJson(const ProcessResult& status, const std::string& state, int exit_code,
                             const char* section) {
  nlohmann::json s = ParseJson(status.out);
  EXPECT_EQ(s.value("state", ""), state);
  EXPECT_EQ(s.value("exit_code", -1), exit_code);
  EXPECT_TRUE(s[section].is_object()) << status.out;
}

}  // namespace safe_upgrade::testing
