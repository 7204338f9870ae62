// Sandbox provisioning and process control.
#include "sandbox/sandbox.h"

#include <libgen.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "postgres/pg_conn.h"
#include "postgres/socket_only.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {

constexpr const char* kMarker = "sandbox.json";

std::string AbsolutePath(const std::string& dir) {
  return fs::absolute(fs::path(dir)).lexically_normal().string();
}

std::string DefaultAgentBinary() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = '\0';
    std::string beside = JoinPath(Dirname(buf), "safe-upgrade-agent");
    if (PathExists(beside)) return beside;
  }
  std::string built = JoinPath(kBuildDir, "safe-upgrade-agent");
  if (PathExists(built)) return built;
  for (const char* p : {"/usr/local/bin/safe-upgrade-agent", "/usr/bin/safe-upgrade-agent"})
    if (PathExists(p)) return p;
  throw SandboxError("cannot find safe-upgrade-agent; build it (make) or install it (make install)");
}

void Say(const SandboxOptions& o, const std::string& line) {
  if (o.progress) o.progress(line);
}

void CheckReachableBy(const std::string& dir, const std::string& user) {
  if (user.empty()) return;
  ProcessOptions opt;
  opt.run_as = user;
  auto r = RunProcess({"test", "-w", dir, "-a", "-x", dir}, opt);
  if (!r.Ok())
    throw SandboxError("\"" + dir + "\" is not reachable by the OS user \"" + user +
                       "\", which runs the server and the agent (a parent directory is closed to it); "
                       "choose a directory such as /tmp/safe-upgrade-sandbox");
}

void WriteEnvFile(const SandboxInfo& info) {
  std::ofstream out(info.env_path, std::ios::trunc);
  out << SandboxEnvLines(info, false);
}

SandboxInfo Layout(const std::string& abs_dir, int port, const std::string& backend) {
  SandboxInfo info;
  info.dir = abs_dir;
  info.data_dir = JoinPath(abs_dir, "data");
  info.socket_dir = JoinPath(abs_dir, "run");
  info.agent_socket = JoinPath(JoinPath(abs_dir, "agent"), "agent.sock");
  info.agent_config_path = JoinPath(abs_dir, "agent.toml");
  info.env_path = JoinPath(abs_dir, "env");
  info.os_user = ServiceUserForCaller();
  info.port = port;
  AgentConfig& c = info.agent_config;
  c.data_directory = info.data_dir;
  c.bin_dir = kPgBinDir;
  c.socket_dir = info.socket_dir;
  c.port = port;
  c.database = "postgres";
  c.db_user = "postgres";
  c.control = "pg_ctl";
  c.server_log = JoinPath(abs_dir, "postgres.log");
  c.listen = "unix:" + info.agent_socket;
  c.snapshot_dir = JoinPath(abs_dir, "snapshots");
  c.wal_archive_dir = JoinPath(abs_dir, "wal_archive");
  c.work_dir = JoinPath(abs_dir, "work");
  c.log_file = JoinPath(abs_dir, "agent.log");
  // A copy of the agent's binary, so the service user can run it wherever the build lives.
  c.agent_binary = JoinPath(JoinPath(abs_dir, "bin"), "safe-upgrade-agent");
  if (backend == "pgbackrest") {
    c.wal_archive_dir.clear();
    c.backend.kind = "pgbackrest";
    c.backend.stanza = "sandbox";
    c.backend.config = JoinPath(abs_dir, "pgbackrest.conf");
  }
  return info;
}

// Waits until the agent listens where its config file (which a test may have changed) says.
void WaitForAgentSocket(const SandboxInfo& info, pid_t pid) {
  AgentConfig on_disk = ParseAgentConfig(ReadFile(info.agent_config_path), info.agent_config_path);
  bool unix_socket = on_disk.listen.rfind("unix:", 0) == 0;
  int port = 0;
  if (!unix_socket) port = std::stoi(on_disk.listen.substr(on_disk.listen.rfind(':') + 1));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (unix_socket ? PathExists(on_disk.listen.substr(5)) : PortOpen(port)) return;
    if (!ProcessAlive(pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string log;
  try {
    log = ReadFile(info.agent_config.log_file);
  } catch (...) {
  }
  throw SandboxError("the agent did not start; its log says:\n" + log);
}

// initdb with trust authentication for local connections: a sandbox is a throwaway cluster on
// this machine, so it also skips initdb's final fsync.
void InitDb(const std::string& bin_dir, const std::string& data_dir, const std::string& run_as) {
  ProcessOptions opt;
  opt.run_as = run_as;
  opt.env["LC_ALL"] = "C.UTF-8";
  RunChecked({bin_dir + "/initdb", "-D", data_dir, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
              "--locale=C.UTF-8", "--no-instructions", "--no-sync"},
             opt);
}

// The scheduler's view of the agent's facts (agent_status()), polled until a check passed. The
// agent starts before the server and the stanza, so its first check may fail; it checks again
// within seconds after a failure.
void WaitForFirstStanzaCheck(PgConn& conn) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  std::string problem = "the agent reported no check yet";
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = conn.Exec("SELECT backend_check_ok::text, backend_problem FROM safe_upgrade.agent_status()");
    if (!r.rows.empty() && r.rows[0][0]) {
      if (*r.rows[0][0] == "true") return;
      problem = r.rows[0][1].value_or("");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  throw SandboxError("the agent's pgbackrest check of the sandbox's stanza did not pass: " + problem);
}

// The standbys recorded in the marker (their ports), laid out and listed in the primary agent's
// configuration.
void AttachStandbys(SandboxInfo& info, const std::vector<int>& ports) {
  info.standbys.clear();
  info.agent_config.standbys.clear();
  for (size_t i = 0; i < ports.size(); ++i) {
    SandboxInfo standby = SandboxStandbyLayout(info, static_cast<int>(i) + 1, ports[i]);
    info.agent_config.standbys.push_back({"standby" + std::to_string(i + 1), "unix:" + standby.agent_socket});
    info.standbys.push_back(standby);
  }
}

std::vector<int> FreePortsBesides(int taken, int count) {
  std::vector<int> ports;
  while (static_cast<int>(ports.size()) < count) {
    int port = FindFreePort();
    bool clash = port == taken;
    for (int p : ports) clash = clash || p == port;
    if (!clash) ports.push_back(port);
  }
  return ports;
}

}  // namespace

SandboxInfo SandboxLayout(const std::string& abs_dir, int port, const std::string& backend) {
  return Layout(abs_dir, port, backend);
}

std::string SandboxInfo::ConnInfo(const std::string& dbname) const {
  return safe_upgrade::ConnInfo(socket_dir, port, dbname, "postgres", "safe-upgrade");
}

std::string SandboxEnvLines(const SandboxInfo& info, bool with_export) {
  std::string prefix = with_export ? "export " : "";
  auto q = [&](const std::string& v) { return with_export ? ShellQuote(v) : v; };
  return prefix + "PGHOST=" + q(info.socket_dir) + "\n" + prefix + "PGPORT=" + std::to_string(info.port) +
         "\n" + prefix + "PGUSER=postgres\n" + prefix + "PGDATABASE=postgres\n";
}

SandboxInfo SandboxOpen(const std::string& dir) {
  std::string abs = AbsolutePath(dir);
  std::string marker = JoinPath(abs, kMarker);
  if (!PathExists(marker))
    throw SandboxError("\"" + abs + "\" is not a safe-upgrade sandbox (no " + kMarker + ")");
  auto doc = nlohmann::json::parse(ReadFile(marker));
  SandboxInfo info = Layout(abs, doc.at("port").get<int>(), doc.value("backend", std::string("local")));
  AttachStandbys(info, doc.value("standby_ports", std::vector<int>()));
  return info;
}

long SandboxAgentPid(const SandboxInfo& info) {
  std::ifstream in(JoinPath(info.dir, "agent.pid"));
  long pid = 0;
  in >> pid;
  return pid;
}

bool SandboxAgentRunning(const SandboxInfo& info) {
  long pid = SandboxAgentPid(info);
  if (pid <= 0 || !ProcessAlive(static_cast<pid_t>(pid))) return false;
  // Guard against pid reuse: it must be our agent binary.
  std::string cmdline;
  try {
    cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  } catch (...) {
    return false;
  }
  return cmdline.find("safe-upgrade-agent") != std::string::npos;
}

void SandboxStartAgent(const SandboxInfo& info, const std::map<std::string, std::string>& env) {
  if (SandboxAgentRunning(info)) return;
  ProcessOptions opt;
  opt.run_as = info.os_user;
  opt.env = env;
  opt.output_file = JoinPath(info.dir, "agent.stderr");
  pid_t pid =
      SpawnDetached({info.agent_config.agent_binary, "serve", "--config", info.agent_config_path}, opt);
  {
    std::ofstream out(JoinPath(info.dir, "agent.pid"), std::ios::trunc);
    out << pid << "\n";
  }
  WaitForAgentSocket(info, pid);
}

void SandboxStopAgent(const SandboxInfo& info, int signal_number) {
  long pid = SandboxAgentPid(info);
  if (!SandboxAgentRunning(info)) return;
  kill(static_cast<pid_t>(pid), signal_number);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ProcessAlive(static_cast<pid_t>(pid))) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(static_cast<pid_t>(pid), SIGKILL);
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (signal_number == SIGKILL) return;  // a crash leaves its socket behind, as a real one would
}

void SandboxInstallAgent(const SandboxInfo& info, const std::string& source) {
  const std::string& dst = info.agent_config.agent_binary;
  RunChecked({"cp", "-f", source, dst + ".new"});
  chmod((dst + ".new").c_str(), 0755);
  DurableRename(dst + ".new", dst);
}

std::map<std::string, std::string> SandboxAgentSettings(const SandboxInfo& info) {
  const std::string& agent = info.agent_config.agent_binary;
  const AgentConfig::Backend& backend = info.agent_config.backend;
  std::string archive_command =
      backend.IsPgBackRest()
          ? ShellQuote(backend.binary) + " " + ShellQuote("--config=" + backend.config) + " " +
                ShellQuote("--stanza=" + backend.stanza) + " archive-push %p"
          : ShellQuote(agent) + " wal-push --config " + ShellQuote(info.agent_config_path) + " %p";
  return {
      {"wal_level", "replica"},
      {"archive_mode", "on"},
      {"archive_command", ConfQuote(archive_command)},
      {"shared_preload_libraries", "'safe_upgrade'"},
      {"safe_upgrade.database", "'postgres'"},
      {"safe_upgrade.agent_address", ConfQuote("unix:" + info.agent_socket)},
      {"max_wal_senders", "10"},
  };
}

SandboxInfo SandboxUp(const std::string& dir, const SandboxOptions& options) {
  std::string abs = AbsolutePath(dir);
  bool exists = PathExists(JoinPath(abs, kMarker));
  if (!exists && IsDirectory(abs) && !fs::is_empty(abs))
    throw SandboxError("\"" + abs + "\" is not empty and is not a sandbox; refusing to touch it");
  if (PathExists(abs) && !IsDirectory(abs))
    throw SandboxError("\"" + abs + "\" exists and is not a directory");

  SandboxInfo info;
  std::string user = ServiceUserForCaller();
  if (!exists) {
    int port = options.port ? options.port : FindFreePort();
    if (options.backend != "local" && options.backend != "pgbackrest")
      throw SandboxError("backend \"" + options.backend + "\" is not one of \"local\", \"pgbackrest\"");
    if (options.standbys < 0 || options.standbys > 9)
      throw SandboxError("--standbys " + std::to_string(options.standbys) + " is not between 0 and 9");
    EnsureDir(abs, 0755);
    info = Layout(abs, port, options.backend);
    std::vector<int> standby_ports = FreePortsBesides(port, options.standbys);
    AttachStandbys(info, standby_ports);
    ChownTree(abs, user);
    CheckReachableBy(abs, user);
    for (const char* sub : {"run", "bin"}) EnsureDir(JoinPath(abs, sub), 0755);
    for (const char* sub : {"agent", "snapshots", "work"}) EnsureDir(JoinPath(abs, sub), 0700);
    if (info.agent_config.backend.IsPgBackRest())
      WriteSandboxStanzaConfig(info, options.repo_options);
    else
      EnsureDir(JoinPath(abs, "wal_archive"), 0700);
    ChownTree(abs, user);
    Say(options, "creating cluster in " + info.data_dir);
    // A sandbox is a throwaway: skipping initdb's fsync saves seconds on every test cluster.
    InitDb(kPgBinDir, info.data_dir, user);
    AtomicWriteFile(
        JoinPath(abs, kMarker),
        nlohmann::json{{"port", port},
                       {"backend", options.backend},
                       {"standby_ports", standby_ports},
                       {"created_at", NowIso8601()}}
            .dump(2),
        0644);
  } else {
    info = SandboxOpen(abs);
    if (options.backend != "local" && info.agent_config.backend.kind != options.backend)
      throw SandboxError("the sandbox in \"" + abs + "\" uses the " + info.agent_config.backend.kind +
                         " backend; it cannot change to " + options.backend);
    if (options.standbys && options.standbys != static_cast<int>(info.standbys.size()))
      throw SandboxError("the sandbox in \"" + abs + "\" has " + std::to_string(info.standbys.size()) +
                         " standby(s); it cannot change to " + std::to_string(options.standbys));
    if (options.port && options.port != info.port)
      throw SandboxError("the sandbox in \"" + abs + "\" uses port " + std::to_string(info.port) +
                         "; it cannot change to " + std::to_string(options.port));
  }

  if (!SandboxAgentRunning(info))
    SandboxInstallAgent(info, options.agent_binary.empty() ? DefaultAgentBinary() : options.agent_binary);
  std::map<std::string, std::string> settings = SandboxAgentSettings(info);
  auto socket_only = SocketOnlySettings(info.port, info.socket_dir);
  settings.insert(socket_only.begin(), socket_only.end());
  settings.insert({"log_line_prefix", "'%m [%p] %q%a '"});
  // A standby that replayed past the restore point is rewound with pg_rewind, which needs it.
  if (!info.standbys.empty()) settings["wal_log_hints"] = "on";
  for (const auto& [k, v] : options.extra_settings) settings[k] = v;
  info.agent_config.allow_root = options.allow_root_callers;
  WriteManagedSettings(info.data_dir, settings);
  AtomicWriteFile(info.agent_config_path, RenderAgentConfig(info.agent_config), 0644);
  ChownTree(abs, user);
  WriteEnvFile(info);

  ServerControl server(kPgBinDir, info.data_dir, "pg_ctl", user, info.agent_config.server_log);
  if (options.start_agent && !SandboxAgentRunning(info)) {
    Say(options, "starting the agent");
    SandboxStartAgent(info, options.agent_env);
  }
  if (!server.Running()) {
    Say(options, "starting PostgreSQL on port " + std::to_string(info.port));
    server.Start();
  }
  if (info.agent_config.backend.IsPgBackRest()) {
    Say(options, "creating pgBackRest stanza \"" + info.agent_config.backend.stanza + "\"");
    CreateSandboxStanza(info);
  }
  if (options.create_extension) {
    PgConn conn(info.ConnInfo());
    conn.Exec("CREATE EXTENSION IF NOT EXISTS safe_upgrade");
    // plan() refuses until the agent's first pgbackrest check has proven the stanza's archive.
    if (info.agent_config.backend.IsPgBackRest() && options.start_agent) {
      Say(options, "waiting for the agent's first pgbackrest check");
      WaitForFirstStanzaCheck(conn);
    }
  }
  if (!info.standbys.empty()) SandboxUpStandbys(info, options);
  return info;
}

void SandboxDown(const std::string& dir) {
  SandboxInfo info = SandboxOpen(dir);
  SandboxDownStandbys(info);
  SandboxStopAgent(info, SIGTERM);
  ServerControl server(kPgBinDir, info.data_dir, "pg_ctl", info.os_user, info.agent_config.server_log);
  server.Stop("fast");
}

}  // namespace safe_upgrade
