// Running child programs (PostgreSQL's tools, the agent) from argv vectors, never a shell string.
// When the caller is root and a run_as user is given, the child drops to that user first.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace safe_upgrade {

struct ProcessOptions {
  // OS user to run as; only honoured when the caller is root.
  std::string run_as;
  std::map<std::string, std::string> env;  // added to (or overriding) the environment
  std::string cwd;
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
  // Called with each line the child writes to stderr (progress), as it arrives.
  std::function<void(const std::string&)> on_stderr_line;
  // Write stdout/stderr to this file (appending) instead of capturing them.
  std::string output_file;
  // Run at low CPU and I/O priority (nice 10, best-effort I/O level 7): copies made while
  // production serves its clients should yield to them.
  bool low_priority = false;
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
  bool Ok() const { return exit_code == 0; }
  // "pg_basebackup exited with code 1: <last stderr lines>"
  std::string Describe(const std::string& program) const;
};

class ProcessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs argv[0] (searched in PATH when it has no slash) and waits for it.
ProcessResult RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Like RunProcess, but throws ProcessError (with the captured stderr) on a non-zero exit.
ProcessResult RunChecked(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Starts argv detached (new session, stdin from /dev/null, output to options.output_file);
// returns its pid without waiting.
pid_t SpawnDetached(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// The OS user PostgreSQL and the agent must run as when we are root: "postgres".
// When not root, the empty string (run as ourselves).
std::string ServiceUserForCaller();

struct UserIds {
  uid_t uid;
  gid_t gid;
  std::string home;
};
std::optional<UserIds> LookupUser(const std::string& name);

bool ProcessAlive(pid_t pid);

// Single-quotes a word for /bin/sh, for the few commands PostgreSQL itself runs through a shell
// (archive_command, restore_command).
std::string ShellQuote(const std::string& word);

}  // namespace safe_upgrade
