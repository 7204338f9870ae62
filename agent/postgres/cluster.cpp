// Cluster control through PostgreSQL's own tools (argv vectors only).
#include "postgres/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"

namespace safe_upgrade {
namespace {
constexpr const char* kBeginMarker = "# --- managed by safe-upgrade: begin ---";
constexpr const char* kEndMarker = "# --- managed by safe-upgrade: end ---";

std::vector<std::string> SplitWords(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
}  // namespace

ServerControl::ServerControl(std::string bin_dir, std::string data_dir, std::string control,
                             std::string run_as, std::string server_log)
    : bin_dir_(std::move(bin_dir)),
      data_dir_(std::move(data_dir)),
      control_(std::move(control)),
      run_as_(std::move(run_as)),
      server_log_(std::move(server_log)) {}

long ServerControl::PostmasterPid() const {
  std::ifstream in(JoinPath(data_dir_, "postmaster.pid"));
  long pid = 0;
  if (!(in >> pid)) return 0;
  return pid;
}

bool ServerControl::Running() const {
  long pid = PostmasterPid();
  return pid > 0 && ProcessAlive(static_cast<pid_t>(pid));
}

// An immediate stop is SIGQUIT to the postmaster, which is all pg_ctl does for it, but pg_ctl
// then looks for the end only every 100 ms, and inside a rollback's downtime every one of those
// counts. False when the signal cannot be sent (another OS user's server): use the tool then.
bool ServerControl::QuitAndWait(std::chrono::seconds timeout) const {
  long pid = PostmasterPid();
  if (pid <= 0) return true;
  if (kill(static_cast<pid_t>(pid), SIGQUIT) != 0) return errno == ESRCH;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // The postmaster removes its pid file once every child has exited, just before it exits.
  while (PathExists(JoinPath(data_dir_, "postmaster.pid")) && ProcessAlive(static_cast<pid_t>(pid))) {
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("the server in " + data_dir_ + " did not stop within " +
                               std::to_string(timeout.count()) + " s of an immediate shutdown");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void ServerControl::Stop(const std::string& mode, std::chrono::seconds timeout) {
  if (!Running()) return;
  auto words = SplitWords(control_);
  // pg_ctlcluster and systemd may track the server as a unit that must see the stop: asked always.
  if (mode == "immediate" && run_as_.empty() && words[0] == "pg_ctl" && QuitAndWait(timeout)) return;
  ProcessOptions opt;
  opt.run_as = run_as_;
  opt.timeout = timeout + std::chrono::seconds(10);
  if (words[0] == "pg_ctl") {
    RunChecked({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-m", mode, "-w", "-t",
                std::to_string(timeout.count()), "stop"},
               opt);
  } else if (words[0] == "pg_ctlcluster" && words.size() == 3) {
    opt.run_as = "";
    RunChecked({"pg_ctlcluster", words[1], words[2], "stop", "-m", mode}, opt);
  } else if (words[0] == "systemd" && words.size() == 2) {
    opt.run_as = "";
    if (mode == "immediate") RunChecked({"systemctl", "kill", "--signal=SIGQUIT", words[1]}, opt);
    RunChecked({"systemctl", "stop", words[1]}, opt);
  } else {
    throw std::runtime_error("unsupported server control \"" + control_ + "\"");
  }
}

void ServerControl::Start(const std::vector<std::string>& extra_options, std::chrono::seconds timeout,
                          bool wait) {
  ProcessOptions opt;
  opt.run_as = run_as_;
  opt.low_priority = low_priority_;
  opt.timeout = timeout + std::chrono::seconds(10);
  auto words = SplitWords(control_);
  if (words[0] == "pg_ctl") {
    std::vector<std::string> argv = {bin_dir_ + "/pg_ctl", "-D", data_dir_};
    if (wait) {
      argv.insert(argv.end(), {"-w", "-t", std::to_string(timeout.count())});
    } else {
      argv.push_back("-W");
    }
    if (!server_log_.empty()) {
      argv.push_back("-l");
      argv.push_back(server_log_);
    }
    if (!extra_options.empty()) {
      std::string o;
      for (const auto& e : extra_options) o += (o.empty() ? "" : " ") + e;
      argv.push_back("-o");
      argv.push_back(o);
    }
    argv.push_back("start");
    RunChecked(argv, opt);
  } else if (words[0] == "pg_ctlcluster" && words.size() == 3) {
    opt.run_as = "";
    RunChecked({"pg_ctlcluster", words[1], words[2], "start"}, opt);
  } else if (words[0] == "systemd" && words.size() == 2) {
    opt.run_as = "";
    RunChecked({"systemctl", "start", words[1]}, opt);
  } else {
    throw std::runtime_error("unsupported server control \"" + control_ + "\"");
  }
}

std::optional<TimelineSwitch> LastTimelineSwitch(const std::string& history_text) {
  std::optional<TimelineSwitch> last;
  std::istringstream in(history_text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    TimelineSwitch sw;
    // Comment and blank lines have no number first.
    if (!(fields >> sw.parent >> sw.lsn)) continue;
    std::getline(fields >> std::ws, sw.reason);
    last = sw;
  }
  return last;
}

std::string TimelineHistoryFileName(uint32_t timeline) {
  char name[32];
  snprintf(name, sizeof name, "%08X.history", timeline);
  return name;
}

ClusterFacts ReadControlData(const std::string& bin_dir, const std::string& data_dir,
                             const std::string& run_as) {
  ProcessOptions opt;
  opt.run_as = run_as;
  opt.env["LC_ALL"] = "C";
  auto r = RunChecked({bin_dir + "/pg_controldata", "-D", data_dir}, opt);
  ClusterFacts facts;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    if (key == "Database system identifier") facts.system_identifier = std::stoull(value);
    if (key == "Latest checkpoint's TimeLineID") facts.timeline = static_cast<uint32_t>(std::stoul(value));
    if (key == "Database cluster state") facts.state = value;
    if (key == "Minimum recovery ending location") facts.min_recovery_end_lsn = value;
    if (key == "Min recovery ending loc's timeline")
      facts.min_recovery_end_timeline = static_cast<uint32_t>(std::stoul(value));
    if (key == "Backup start location") facts.backup_start_lsn = value;
  }
  return facts;
}

std::string ConfQuote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

void WriteManagedSettings(const std::string& data_dir, const std::map<std::string, std::string>& settings) {
  std::string path = JoinPath(data_dir, "postgresql.conf");
  std::string text = ReadFile(path);
  auto begin = text.find(kBeginMarker);
  if (begin != std::string::npos) {
    auto end = text.find(kEndMarker, begin);
    text.erase(begin,
               end == std::string::npos ? std::string::npos : end + std::string(kEndMarker).size() + 1);
  }
  std::ostringstream block;
  block << kBeginMarker << "\n";
  for (const auto& [k, v] : settings) block << k << " = " << v << "\n";
  block << kEndMarker << "\n";
  if (!text.empty() && text.back() != '\n') text += "\n";
  text += block.str();
  // Keep the owner and mode of the file: rewrite in place.
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("could not write " + path);
}

namespace {
sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}
}  // namespace

bool PortOpen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr = Loopback(port);
  bool open = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return open;
}

int FindFreePort() {
  static std::mt19937 rng(static_cast<unsigned>(getpid()) ^ static_cast<unsigned>(time(nullptr)));
  std::uniform_int_distribution<int> dist(20000, 60000);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = dist(rng);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) continue;
    sockaddr_in addr = Loopback(port);
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    // A unix-socket-only server also claims .s.PGSQL.<port> lock files; distinct ports avoid clashes.
    if (ok) return port;
  }
  throw std::runtime_error("no free TCP port found");
}

}  // namespace safe_upgrade
