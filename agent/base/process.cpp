// Child process handling: fork/exec with optional privilege drop, stderr streaming, timeouts.
#include "base/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace safe_upgrade {
namespace {

std::vector<char*> CStrings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Runs in the child after fork: environment, user, directory, then exec. Never returns.
[[noreturn]] void ExecChild(const std::vector<std::string>& argv, const ProcessOptions& options) {
  for (const auto& [k, v] : options.env) setenv(k.c_str(), v.c_str(), 1);
  if (!options.run_as.empty() && geteuid() == 0) {
    auto ids = LookupUser(options.run_as);
    if (!ids) {
      fprintf(stderr, "unknown OS user \"%s\"\n", options.run_as.c_str());
      _exit(127);
    }
    if (initgroups(options.run_as.c_str(), ids->gid) != 0 || setgid(ids->gid) != 0 || setuid(ids->uid) != 0) {
      fprintf(stderr, "cannot switch to OS user \"%s\": %s\n", options.run_as.c_str(), strerror(errno));
      _exit(127);
    }
    setenv("HOME", ids->home.c_str(), 1);
    setenv("USER", options.run_as.c_str(), 1);
    setenv("LOGNAME", options.run_as.c_str(), 1);
  }
  if (!options.cwd.empty() && chdir(options.cwd.c_str()) != 0) {
    fprintf(stderr, "cannot enter %s: %s\n", options.cwd.c_str(), strerror(errno));
    _exit(127);
  }
  if (options.low_priority) {
    // Best effort: a kernel without ioprio support still runs the copy, only less politely.
    (void)setpriority(PRIO_PROCESS, 0, 10);
    constexpr int kIoprioWhoProcess = 1, kIoprioClassBestEffort = 2, kIoprioClassShift = 13;
    (void)syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, (kIoprioClassBestEffort << kIoprioClassShift) | 7);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  auto args = CStrings(argv);
  execvp(args[0], args.data());
  fprintf(stderr, "cannot run %s: %s\n", argv[0].c_str(), strerror(errno));
  _exit(127);
}

void ReadAvailable(int fd, std::string& into, std::string* line_buffer,
                   const std::function<void(const std::string&)>& on_line, bool& open) {
  char buf[8192];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n <= 0) {
    if (n == 0 || (errno != EINTR && errno != EAGAIN)) open = false;
    return;
  }
  into.append(buf, static_cast<size_t>(n));
  if (line_buffer && on_line) {
    line_buffer->append(buf, static_cast<size_t>(n));
    size_t pos;
    while ((pos = line_buffer->find_first_of("\r\n")) != std::string::npos) {
      std::string line = line_buffer->substr(0, pos);
      line_buffer->erase(0, pos + 1);
      if (!line.empty()) on_line(line);
    }
  }
}

}  // namespace

std::string ProcessResult::Describe(const std::string& program) const {
  std::ostringstream s;
  if (timed_out)
    s << program << " timed out";
  else if (signal != 0)
    s << program << " was killed by signal " << signal;
  else
    s << program << " exited with code " << exit_code;
  std::string tail = err;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (tail.size() > 2000) tail = "..." + tail.substr(tail.size() - 2000);
  if (!tail.empty()) s << ": " << tail;
  return s.str();
}

std::optional<UserIds> LookupUser(const std::string& name) {
  struct passwd pwd {};
  struct passwd* result = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name.c_str(), &pwd, buf.data(), buf.size(), &result) != 0 || result == nullptr)
    return std::nullopt;
  return UserIds{pwd.pw_uid, pwd.pw_gid, pwd.pw_dir ? pwd.pw_dir : "/"};
}

std::string ServiceUserForCaller() { return geteuid() == 0 ? "postgres" : ""; }

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool ProcessAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

ProcessResult RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw ProcessError("empty command");
  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  bool to_file = !options.output_file.empty();
  if (!to_file && (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0))
    throw ProcessError(std::string("pipe failed: ") + strerror(errno));
  pid_t pid = fork();
  if (pid < 0) throw ProcessError(std::string("fork failed: ") + strerror(errno));
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (to_file) {
      int fd = open(options.output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
      if (fd < 0) _exit(127);
      dup2(fd, 1);
      dup2(fd, 2);
    } else {
      dup2(out_pipe[1], 1);
      dup2(err_pipe[1], 2);
    }
    ExecChild(argv, options);
  }
  ProcessResult result;
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  if (!to_file) {
    close(out_pipe[1]);
    close(err_pipe[1]);
    bool out_open = true, err_open = true;
    std::string line_buffer;
    while (out_open || err_open) {
      struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        result.timed_out = true;
        kill(pid, SIGKILL);
        break;
      }
      int r = poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 1000)));
      if (r < 0 && errno != EINTR) break;
      if (out_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
        ReadAvailable(out_pipe[0], result.out, nullptr, nullptr, out_open);
      if (err_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
        ReadAvailable(err_pipe[0], result.err, &line_buffer, options.on_stderr_line, err_open);
    }
    if (!line_buffer.empty() && options.on_stderr_line) options.on_stderr_line(line_buffer);
    close(out_pipe[0]);
    close(err_pipe[0]);
  }
  int status = 0;
  while (true) {
    pid_t w = waitpid(pid, &status, to_file ? WNOHANG : 0);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) throw ProcessError(std::string("waitpid failed: ") + strerror(errno));
    if (to_file) {
      if (std::chrono::steady_clock::now() > deadline) {
        result.timed_out = true;
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      usleep(20000);
    }
  }
  if (WIFEXITED(status) && !result.timed_out)
    result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    result.signal = WTERMSIG(status);
  return result;
}

ProcessResult RunChecked(const std::vector<std::string>& argv, const ProcessOptions& options) {
  auto result = RunProcess(argv, options);
  if (!result.Ok()) {
    auto slash = argv[0].rfind('/');
    throw ProcessError(result.Describe(slash == std::string::npos ? argv[0] : argv[0].substr(slash + 1)));
  }
  return result;
}

pid_t SpawnDetached(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw ProcessError("empty command");
  // Double fork: the daemon is re-parented to init, so it never lingers as our zombie.
  int pid_pipe[2];
  if (pipe2(pid_pipe, O_CLOEXEC) != 0) throw ProcessError(std::string("pipe failed: ") + strerror(errno));
  pid_t child = fork();
  if (child < 0) throw ProcessError(std::string("fork failed: ") + strerror(errno));
  if (child == 0) {
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) {
      (void)!write(pid_pipe[1], &grandchild, sizeof grandchild);
      _exit(grandchild > 0 ? 0 : 1);
    }
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    int fd = options.output_file.empty()
                 ? devnull
                 : open(options.output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
    if (fd < 0) fd = devnull;
    if (!options.output_file.empty() && !options.run_as.empty() && geteuid() == 0) {
      if (auto ids = LookupUser(options.run_as)) (void)!fchown(fd, ids->uid, ids->gid);
    }
    dup2(fd, 1);
    dup2(fd, 2);
    ExecChild(argv, options);
  }
  close(pid_pipe[1]);
  pid_t daemon_pid = -1;
  if (read(pid_pipe[0], &daemon_pid, sizeof daemon_pid) != sizeof daemon_pid) daemon_pid = -1;
  close(pid_pipe[0]);
  int status;
  waitpid(child, &status, 0);
  if (daemon_pid <= 0) throw ProcessError("could not start " + argv[0]);
  return daemon_pid;
}

}  // namespace safe_upgrade
