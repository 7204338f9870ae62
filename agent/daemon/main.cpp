// safe-upgrade-agent: the gRPC service that runs next to PostgreSQL, plus the wal-push and
// wal-fetch commands that PostgreSQL calls as archive_command / restore_command.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <thread>

#include "base/config.h"
#include "base/fs_util.h"
#include "base/job.h"
#include "base/journal.h"
#include "build_info.h"
#include "daemon/agent_service.h"
#include "daemon/host_facts.h"
#include "daemon/patroni_resumer.h"
#include "daemon/standby_agents.h"
#include "daemon/unix_listener.h"
#include "jobs/jobs.h"
#include "postgres/cluster.h"
#include "postgres/wal_archive.h"
#include "rpc/agent_client.h"

namespace safe_upgrade {
namespace {

void SetUpLogging(const AgentConfig& config) {
  std::shared_ptr<spdlog::logger> logger;
  if (config.log_file.empty())
    logger = spdlog::stderr_color_mt("agent");
  else
    logger = spdlog::basic_logger_mt("agent", config.log_file);
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ [%P] %v");
  logger->set_level(spdlog::level::from_str(config.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// A stale socket file from a crashed agent would make the bind fail; a live one means another
// agent is serving, and we must not steal its socket.
void PrepareUnixSocket(const std::string& path) {
  EnsureDir(Dirname(path), 0700);
  if (!PathExists(path)) return;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  bool live = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  if (live) throw std::runtime_error("another agent is already listening on " + path);
  unlink(path.c_str());
}

// The journaled rollback that is in progress, if any (its data directory may be moved aside).
std::optional<JournalDoc> RollbackInProgress(const AgentConfig& config) {
  std::string dir = config.JournalDir();
  if (config.work_dir.empty() || !IsDirectory(dir)) return std::nullopt;
  Journal journal(dir);
  for (int64_t id : journal.UpgradeIds()) {
    JournalDoc doc = journal.Load(id);
    if (doc.rollback == RollbackState::kInProgress) return doc;
  }
  return std::nullopt;
}

int Serve(const std::string& config_path, const std::string& argv0) {
  AgentConfig config;
  std::optional<JournalDoc> rollback;
  try {
    config = ParseAgentConfig(ReadFile(config_path), config_path);
    // Resolved now, while argv[0] still names the file we run: recovery settings written later
    // must name a path that survives the binary being replaced, never /proc/self/exe.
    if (config.agent_binary.empty()) config.agent_binary = ResolveStartedFrom(argv0);
    if (config.agent_binary.empty())
      throw ConfigError("agent.agent_binary: cannot tell where the agent was started from (" + argv0 +
                        "); set it to the agent's installed path");
    rollback = RollbackInProgress(config);
    ValidateAgentConfig(config, /*data_directory_may_be_missing=*/rollback.has_value());
  } catch (const std::exception& e) {
    fprintf(stderr, "safe-upgrade-agent: invalid configuration: %s\n", e.what());
    return 2;
  }
  SetUpLogging(config);

  // Block the stop signals in every thread (gRPC's included); a dedicated thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  try {
    EnsureDir(config.snapshot_dir, 0700);
    if (!config.wal_archive_dir.empty()) EnsureDir(config.wal_archive_dir, 0700);
    EnsureDir(config.work_dir, 0700);
    ClusterFacts facts;
    if (PathExists(config.data_directory)) {
      facts = ReadControlData(config.bin_dir, config.data_directory);
    } else {
      std::string sysid =
          rollback && rollback->rollback_context ? rollback->rollback_context->system_identifier : "";
      facts.system_identifier = std::stoull(sysid.empty() ? std::string("0") : sysid);
      spdlog::warn("the data directory {} is moved aside by an interrupted rollback; resuming it",
                   config.data_directory);
    }
    Journal journal(config.JournalDir());
    JobManager jobs(config, journal);
    std::string address = config.listen;
    bool unix_socket = address.rfind("unix:", 0) == 0;
    // On the Unix socket the listener hands this server only the connections of allowed peers
    // (refused ones go to its own server), so every call here is authorized by construction.
    std::unique_ptr<UnixListener> listener;
    if (unix_socket) listener = std::make_unique<UnixListener>(address.substr(5), config.allow_root);
    HostFactsRefresher host_facts(config, jobs);
    StandbyAgentsWatcher standby_agents(config, facts.system_identifier);
    PatroniResumer patroni_resumer(config, journal, jobs);
    AgentService service(config, jobs, journal, host_facts, standby_agents, facts.system_identifier);

    std::shared_ptr<grpc::ServerCredentials> creds;
    if (unix_socket) {
      PrepareUnixSocket(address.substr(5));
    } else if (config.insecure_tcp) {
      spdlog::warn("listening on TCP {} without TLS (insecure_tcp = true, for tests only)", address);
      creds = grpc::InsecureServerCredentials();
    } else {
      grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      ssl.pem_root_certs = ReadFile(config.tls_ca_file);
      ssl.pem_key_cert_pairs.push_back({ReadFile(config.tls_key_file), ReadFile(config.tls_cert_file)});
      creds = grpc::SslServerCredentials(ssl);
    }
    grpc::ServerBuilder builder;
    if (!unix_socket) builder.AddListeningPort(address, creds);
    builder.RegisterService(&service);
    builder.SetMaxReceiveMessageSize(64 * 1024);
    auto server = builder.BuildAndStart();
    if (!server) {
      spdlog::error("could not listen on {}", address);
      return 1;
    }
    if (listener) listener->Start(server.get());
    spdlog::info("safe-upgrade-agent {} serving {} (system identifier {}) on {}", kVersion,
                 config.data_directory, facts.system_identifier, address);

    RecoverOnStartup(jobs, journal, config);

    int sig = 0;
    while (true) {
      sigwait(&stop_signals, &sig);
      if (sig == SIGHUP) {
        spdlog::info("SIGHUP received; configuration is read at start only, restart the agent to change it");
        continue;
      }
      break;
    }
    spdlog::info("signal {} received, shutting down", sig);
    if (listener) listener->Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    jobs.Shutdown();
    spdlog::info("agent stopped");
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("agent failed: {}", e.what());
    return 1;
  }
}

int LoadForCommand(const std::string& config_path, AgentConfig& config) {
  try {
    config = LoadAgentConfig(config_path);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "safe-upgrade-agent: invalid configuration: %s\n", e.what());
    return 2;
  }
}

}  // namespace
}  // namespace safe_upgrade

int main(int argc, char** argv) {
  using namespace safe_upgrade;
  CLI::App app{"safe-upgrade-agent: snapshots, dry runs and point-in-time rollback for pg_safe_upgrade"};
  app.set_version_flag("--version", std::string(kVersion));
  std::string config_path = "/etc/safe-upgrade/agent.toml";
  app.add_option("-c,--config", config_path, "agent configuration file (TOML)")->capture_default_str();

  auto* serve = app.add_subcommand("serve", "run the agent (the default)");
  auto* push = app.add_subcommand("wal-push", "archive a WAL file (archive_command = '... wal-push %p')");
  std::string push_path;
  push->add_option("path", push_path, "the WAL file, relative to the data directory (%p)")->required();
  auto* fetch =
      app.add_subcommand("wal-fetch", "restore a WAL file (restore_command = '... wal-fetch %f %p')");
  std::string fetch_name, fetch_dest;
  fetch->add_option("name", fetch_name, "file name (%f)")->required();
  fetch->add_option("dest", fetch_dest, "destination (%p)")->required();
  auto* ping =
      app.add_subcommand("ping", "ask the configured agent whether it is up (exit 0 when it answers)");
  for (auto* sub : {serve, push, fetch, ping})
    sub->add_option("-c,--config", config_path, "agent configuration file (TOML)");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  if (ping->parsed()) {
    // Only the address matters here; the caller may not be able to see the data directory.
    AgentConfig config;
    try {
      config = ParseAgentConfig(ReadFile(config_path), config_path);
    } catch (const std::exception& e) {
      fprintf(stderr, "safe-upgrade-agent: invalid configuration: %s\n", e.what());
      return 2;
    }
    AgentTls tls;
    if (config.listen.rfind("unix:", 0) != 0)
      tls = {config.tls_ca_file, config.tls_cert_file, config.tls_key_file};
    AgentPing pong;
    auto err = AgentClient::Create(config.listen, 5000, tls)->Ping(pong);
    if (!err.ok) {
      fprintf(stderr, "safe-upgrade-agent: %s: %s\n", config.listen.c_str(), err.message.c_str());
      return 1;
    }
    printf("agent %s serving %s (system identifier %llu) on %s\n", pong.agent_version.c_str(),
           pong.data_directory.c_str(), static_cast<unsigned long long>(pong.system_identifier),
           config.listen.c_str());
    return 0;
  }
  if (push->parsed() || fetch->parsed()) {
    AgentConfig config;
    if (int rc = LoadForCommand(config_path, config)) return rc;
    return push->parsed() ? WalPush(config, push_path) : WalFetch(config, fetch_name, fetch_dest);
  }
  return Serve(config_path, argv[0]);
}
