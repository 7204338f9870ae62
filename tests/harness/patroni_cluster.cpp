// Test harness: etcd and two Patroni nodes on loopback (see patroni_cluster.h).
#include "patroni_cluster.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/fs_util.h"
#include "build_info.h"
#include "postgres/cluster.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = std::chrono::milliseconds(200);
// Patroni stops its PostgreSQL (fast) on SIGTERM; a leader first waits for its replica.
constexpr auto kPatroniStopTimeout = std::chrono::seconds(60);
constexpr auto kEtcdStopTimeout = std::chrono::seconds(20);
constexpr const char* kReplicationUser = "replicator";

std::string Tail(const std::string& text, size_t max_bytes) {
  return text.size() <= max_bytes ? text : "...\n" + text.substr(text.size() - max_bytes);
}

// A YAML single-quoted scalar: nothing in it is interpreted but the doubled quote.
std::string Yaml(const std::string& value) {
  std::string out = "'";
  for (char c : value) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// A SpawnDetached process is re-parented to PID 1, which may never reap it inside a container; a
// zombie has stopped all the same.
bool Stopped(pid_t pid) {
  if (!ProcessAlive(pid)) return true;
  std::string stat = ReadFileOr("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

// SIGTERM to each, then SIGKILL to those still running at the deadline; waits until all stopped.
void TerminateAll(const std::vector<pid_t>& pids, std::chrono::seconds grace) {
  for (pid_t pid : pids)
    if (pid > 0) kill(pid, SIGTERM);
  auto all_stopped = [&] {
    for (pid_t pid : pids)
      if (pid > 0 && !Stopped(pid)) return false;
    return true;
  };
  auto deadline = Clock::now() + grace;
  while (!all_stopped() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (all_stopped()) return;
  for (pid_t pid : pids) {
    if (pid > 0 && !Stopped(pid)) {
      std::cerr << "pid " << pid << " ignored SIGTERM for " << grace.count() << " s; sending SIGKILL\n";
      kill(pid, SIGKILL);
    }
  }
  deadline = Clock::now() + std::chrono::seconds(10);
  while (!all_stopped() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

// Distinct free loopback ports (FindFreePort picks at random, so two calls may agree).
std::vector<int> FreePorts(size_t count) {
  std::set<int> ports;
  while (ports.size() < count) ports.insert(FindFreePort());
  return {ports.begin(), ports.end()};
}

// The settings Patroni keeps cluster-wide, from the DCS (bootstrap.dcs, where this harness sets
// them as the agent needs them); Patroni ignores them in a node's own parameters.
const std::set<std::string> kDcsOnly = {"wal_level", "max_wal_senders"};

// A value of SandboxAgentSettings ('quoted' for postgresql.conf) as Patroni takes it: raw, which
// Patroni quotes when it writes postgresql.conf.
std::string Unquoted(const std::string& conf_value) {
  if (conf_value.size() < 2 || conf_value.front() != '\'' || conf_value.back() != '\'') return conf_value;
  std::string out;
  for (size_t i = 1; i + 1 < conf_value.size(); ++i) {
    out += conf_value[i];
    if (conf_value[i] == '\'') ++i;  // '' is one quote
  }
  return out;
}

std::string Describe(const PatroniClusterView& view) {
  std::ostringstream out;
  out << "pause=" << (view.pause ? "true" : "false");
  for (const auto& m : view.members)
    out << "; " << m.name << " role=" << m.role << " state=" << m.state << " timeline=" << m.timeline
        << " lag=" << (m.lag_bytes ? std::to_string(*m.lag_bytes) : "unknown");
  return out.str();
}

}  // namespace

std::string PatroniNode::ConnInfo(const std::string& dbname) const {
  return safe_upgrade::ConnInfo(socket_dir, port, dbname, "postgres", "su-patroni-test");
}

std::string PatroniUnavailable() {
  const std::string install = " (as root: `make deps`, or apt-get install patroni etcd-server)";
  if (!CommandRuns({"patroni", "--version"})) return "patroni is not installed" + install;
  if (!CommandRuns({"etcd", "--version"})) return "etcd is not installed" + install;
  if (!PathExists(JoinPath(kPgBinDir, "postgres")))
    return std::string("no PostgreSQL server in ") + kPgBinDir;
  if (geteuid() == 0 && !LookupUser("postgres"))
    return "running as root, and there is no postgres OS user to run PostgreSQL and Patroni as";
  return "";
}

PatroniCluster::PatroniCluster(PatroniClusterOptions options) : options_(std::move(options)) {
  std::string tmpl = "/tmp/su-patroni-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in /tmp");
  root_ = tmpl;
  // The service user must reach the nodes' directories below it.
  chmod(root_.c_str(), 0755);
  os_user_ = ServiceUserForCaller();
  try {
    auto ports = FreePorts(6);
    etcd_client_port_ = ports[0];
    etcd_peer_port_ = ports[1];
    for (int i = 0; i < 2; ++i) {
      PatroniNode node;
      node.name = "node" + std::to_string(i + 1);
      std::string dir = JoinPath(root_, node.name);
      node.port = ports[2 + 2 * i];
      node.rest_url = "http://127.0.0.1:" + std::to_string(ports[3 + 2 * i]);
      node.agent = SandboxLayout(dir, node.port);
      node.data_dir = node.agent.data_dir;
      node.socket_dir = node.agent.socket_dir;
      node.config_file = JoinPath(dir, "patroni.yml");
      node.log_file = JoinPath(dir, "patroni.log");
      node.manual_log = JoinPath(dir, "postgres-by-hand.log");
      nodes_.push_back(std::move(node));
    }
    // Both layouts first: node1's agent lists node2's.
    for (auto& node : nodes_) {
      std::string dir = Dirname(node.config_file);
      EnsureDir(dir, 0700);
      EnsureDir(node.socket_dir, 0700);
      if (options_.with_agents) InstallAgent(node);
      WriteNodeConfig(node);
      ChownTree(dir, os_user_);
    }
    StartEtcd();
    // node1 alone first, so that it is the one that bootstraps: the tests know who leads.
    patroni_pids_.push_back(StartPatroni(nodes_[0]));
    auto deadline = Clock::now() + options_.bootstrap_timeout;
    std::string last = "no answer";
    while (true) {
      try {
        auto view = Client(0, std::chrono::seconds(2)).Cluster();
        last = Describe(view);
        auto* leader = view.Leader();
        if (leader && leader->name == nodes_[0].name && leader->state == "running") break;
      } catch (const std::exception& e) {
        last = e.what();
      }
      if (Stopped(patroni_pids_[0])) throw std::runtime_error("patroni for node1 exited while bootstrapping");
      if (Clock::now() >= deadline)
        throw std::runtime_error("node1 did not bootstrap and take the leader key within " +
                                 std::to_string(options_.bootstrap_timeout.count()) + " s (last: " + last +
                                 ")");
      std::this_thread::sleep_for(kPollInterval);
    }
    patroni_pids_.push_back(StartPatroni(nodes_[1]));
    if (options_.with_agents) StartAgents();
  } catch (...) {
    std::cerr << Logs();
    Stop();
    if (!getenv("SU_KEEP_TEST_DIRS")) {
      try {
        RemoveTree(root_);
      } catch (...) {
      }
    }
    throw;
  }
}

PatroniCluster::~PatroniCluster() {
  // An exception escaping the test body is a failure gtest records only after we are gone.
  if (::testing::Test::HasFailure() || std::uncaught_exceptions() > 0) std::cerr << Logs();
  Stop();
  if (getenv("SU_KEEP_TEST_DIRS")) {
    std::cerr << "test directory kept: " << root_ << "\n";
    return;
  }
  try {
    RemoveTree(root_);
  } catch (const std::exception& e) {
    std::cerr << "could not remove " << root_ << ": " << e.what() << "\n";
  }
}

ProcessOptions PatroniCluster::AsServiceUser(std::chrono::milliseconds timeout) const {
  ProcessOptions opt;
  opt.run_as = os_user_;
  opt.timeout = timeout;
  return opt;
}

std::string PatroniCluster::EtcdUrl() const {
  return "http://127.0.0.1:" + std::to_string(etcd_client_port_);
}

void PatroniCluster::StartEtcd() {
  std::string dir = JoinPath(root_, "etcd");
  EnsureDir(dir, 0700);
  ChownTree(dir, os_user_);
  etcd_log_ = JoinPath(dir, "etcd.log");
  std::string peer_url = "http://127.0.0.1:" + std::to_string(etcd_peer_port_);
  ProcessOptions opt = AsServiceUser(std::chrono::minutes(1));
  opt.output_file = etcd_log_;
  opt.cwd = dir;
  etcd_pid_ = SpawnDetached({"etcd",
                             "--name",
                             "etcd0",
                             "--logger",
                             "zap",
                             "--data-dir",
                             JoinPath(dir, "data"),
                             "--listen-client-urls",
                             EtcdUrl(),
                             "--advertise-client-urls",
                             EtcdUrl(),
                             "--listen-peer-urls",
                             peer_url,
                             "--initial-advertise-peer-urls",
                             peer_url,
                             "--initial-cluster",
                             "etcd0=" + peer_url,
                             "--initial-cluster-state",
                             "new",
                             "--initial-cluster-token",
                             "su-test-" + root_.substr(root_.rfind('-') + 1)},
                            opt);
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!PortOpen(etcd_client_port_)) {
    if (Stopped(etcd_pid_)) throw std::runtime_error("etcd exited at start");
    if (Clock::now() >= deadline) throw std::runtime_error("etcd did not listen within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void PatroniCluster::InstallAgent(PatroniNode& node) const {
  AgentConfig& config = node.agent.agent_config;
  // The tests run as root and call the agent's socket themselves.
  config.allow_root = true;
  if (&node == &nodes_[0]) {
    // The replica's application_name in the leader's pg_stat_replication is its member name.
    config.standbys = {{nodes_[1].name, "unix:" + nodes_[1].agent.agent_socket}};
    config.patroni.rest_api = node.rest_url;
  } else {
    config.role = "standby";
  }
  const std::string& dir = node.agent.dir;
  for (const char* sub : {"run", "bin"}) EnsureDir(JoinPath(dir, sub), 0755);
  for (const char* sub : {"agent", "snapshots", "work", "wal_archive"}) EnsureDir(JoinPath(dir, sub), 0700);
  // Installed before Patroni starts the server: archive_command runs the copy from the first WAL.
  SandboxInstallAgent(node.agent, JoinPath(kBuildDir, "safe-upgrade-agent"));
  AtomicWriteFile(node.agent.agent_config_path, RenderAgentConfig(config), 0644);
}

void PatroniCluster::StartAgents() {
  // node2's data directory exists (and its agent's configuration validates) once it is cloned;
  // node1's agent may call node2's from its first job on.
  WaitForLeaderAndStreamingReplica(Clock::now() + options_.bootstrap_timeout);
  agents_started_ = true;
  SandboxStartAgent(nodes_[1].agent);
  SandboxStartAgent(nodes_[0].agent);
}

void PatroniCluster::WriteNodeConfig(const PatroniNode& node) const {
  std::string rest = node.rest_url.substr(std::string("http://").size());
  std::string pg = "127.0.0.1:" + std::to_string(node.port);
  std::ostringstream y;
  y << "# Written by tests/harness/patroni_cluster.cpp for a throwaway test cluster.\n"
    << "scope: " << Yaml(options_.scope) << "\nname: " << Yaml(node.name) << "\n"
    << "log:\n  level: INFO\n"
    << "restapi:\n  listen: " << Yaml(rest) << "\n  connect_address: " << Yaml(rest)
    << "\n"
    // etcd 3.4 serves the v2 API only with --enable-v2; Patroni's etcd3 module needs none of it.
    << "etcd3:\n  hosts: " << Yaml("127.0.0.1:" + std::to_string(etcd_client_port_)) << "\n"
    << "bootstrap:\n  dcs:\n"
    // Patroni wants loop_wait + 2 * retry_timeout <= ttl, and ttl at least 20.
    << "    ttl: 20\n    loop_wait: " << options_.loop_wait.count() << "\n    retry_timeout: 5\n"
    << "    maximum_lag_on_failover: 1048576\n"
    << "    postgresql:\n      use_pg_rewind: true\n      use_slots: true\n      parameters:\n";
  std::map<std::string, std::string> dcs = {{"wal_level", "replica"},
                                            {"hot_standby", "on"},
                                            {"wal_log_hints", "on"},
                                            {"max_wal_senders", "10"},
                                            {"max_replication_slots", "10"}};
  for (const auto& [k, v] : options_.dcs_parameters) dcs[k] = v;
  for (const auto& [k, v] : dcs) y << "        " << k << ": " << Yaml(v) << "\n";
  // initdb's fsync is skipped, as for every test cluster.
  y << "  initdb:\n  - encoding: UTF8\n  - no-sync\n"
    << "postgresql:\n  listen: " << Yaml(pg) << "\n  connect_address: " << Yaml(pg) << "\n"
    << "  data_dir: " << Yaml(node.data_dir) << "\n  bin_dir: " << Yaml(kPgBinDir) << "\n"
    << "  pgpass: " << Yaml(JoinPath(Dirname(node.config_file), "pgpass")) << "\n"
    << "  use_unix_socket: true\n"
    // A throwaway cluster: trust on the socket and on loopback, for people and for replication.
    << "  pg_hba:\n  - local all all trust\n  - local replication all trust\n"
    << "  - host all all 127.0.0.1/32 trust\n  - host replication all 127.0.0.1/32 trust\n"
    << "  authentication:\n"
    << "    superuser:\n      username: postgres\n      password: " << Yaml("su-test-superuser") << "\n"
    << "    replication:\n      username: " << kReplicationUser
    << "\n      password: " << Yaml("su-test-replication") << "\n"
    << "    rewind:\n      username: postgres\n      password: " << Yaml("su-test-superuser") << "\n"
    << "  parameters:\n    unix_socket_directories: " << Yaml(node.socket_dir) << "\n";
  std::map<std::string, std::string> parameters;
  if (options_.with_agents) {
    for (const auto& [k, v] : SandboxAgentSettings(node.agent))
      if (!kDcsOnly.count(k)) parameters[k] = Unquoted(v);
  }
  for (const auto& [k, v] : options_.parameters) parameters[k] = v;
  for (const auto& [k, v] : parameters) y << "    " << k << ": " << Yaml(v) << "\n";
  AtomicWriteFile(node.config_file, y.str(), 0600);
}

pid_t PatroniCluster::StartPatroni(const PatroniNode& node) const {
  ProcessOptions opt = AsServiceUser(std::chrono::minutes(1));
  opt.output_file = node.log_file;
  opt.cwd = Dirname(node.config_file);
  return SpawnDetached({"patroni", node.config_file}, opt);
}

PatroniClient PatroniCluster::Client(size_t i, std::chrono::milliseconds timeout) const {
  return PatroniClient(nodes_.at(i).rest_url, timeout);
}

PatroniClusterView PatroniCluster::ClusterView() const {
  std::string errors;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    try {
      return Client(i, std::chrono::seconds(3)).Cluster();
    } catch (const PatroniError& e) {
      errors += std::string(errors.empty() ? "" : "; ") + e.what();
    }
  }
  throw std::runtime_error("no Patroni node answered GET /cluster: " + errors);
}

const PatroniNode& PatroniCluster::Node(const std::string& name) const {
  for (const auto& node : nodes_)
    if (node.name == name) return node;
  throw std::runtime_error("the cluster has no member \"" + name + "\"");
}

const PatroniNode& PatroniCluster::Leader() const {
  auto view = ClusterView();
  if (auto* leader = view.Leader()) return Node(leader->name);
  throw std::runtime_error("no member holds the leader key (" + Describe(view) + ")");
}

const PatroniNode& PatroniCluster::Replica() const {
  auto view = ClusterView();
  for (const auto& member : view.members)
    if (member.role == "replica") return Node(member.name);
  throw std::runtime_error("no member is a replica (" + Describe(view) + ")");
}

void PatroniCluster::WaitForLeaderAndStreamingReplica(Clock::time_point deadline) const {
  std::string last = "no answer";
  while (true) {
    try {
      auto view = ClusterView();
      last = Describe(view);
      auto* leader = view.Leader();
      const PatroniClusterMember* replica = nullptr;
      for (const auto& m : view.members)
        if (m.role == "replica") replica = &m;
      // Patroni 3.0.2 says "running" for a replica; later versions say "streaming".
      bool replica_up = replica && (replica->state == "running" || replica->state == "streaming");
      if (leader && leader->state == "running" && replica_up) {
        PgConn conn(Node(leader->name).ConnInfo(), std::chrono::seconds(3));
        auto streaming =
            conn.Exec("SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                      {replica->name});
        if (!streaming.Empty()) return;
        last += " (" + replica->name + " is not streaming from " + leader->name + " yet)";
      }
    } catch (const std::exception& e) {
      last = e.what();
    }
    if (Clock::now() >= deadline)
      throw std::runtime_error("no leader with a streaming replica before the deadline (last: " + last + ")");
    std::this_thread::sleep_for(kPollInterval);
  }
}

void PatroniCluster::StopPostgresByHand(const PatroniNode& node, const std::string& mode) const {
  ServerControl(kPgBinDir, node.data_dir, "pg_ctl", os_user_).Stop(mode, std::chrono::seconds(60));
}

void PatroniCluster::StartPostgresByHand(const PatroniNode& node) const {
  ServerControl(kPgBinDir, node.data_dir, "pg_ctl", os_user_, node.manual_log)
      .Start({}, std::chrono::seconds(60));
}

bool PatroniCluster::PostgresRunning(const PatroniNode& node) const {
  return ServerControl(kPgBinDir, node.data_dir, "pg_ctl", os_user_).Running();
}

void PatroniCluster::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // The agents first: none of them may stop or start a server while Patroni stops.
  if (agents_started_) {
    for (const auto& node : nodes_) {
      try {
        SandboxStopAgent(node.agent, SIGTERM);
      } catch (const std::exception& e) {
        std::cerr << "could not stop the agent of " << node.name << ": " << e.what() << "\n";
      }
    }
  }
  TerminateAll(patroni_pids_, kPatroniStopTimeout);
  // A PostgreSQL that Patroni did not stop: one it was killed away from, or one started by hand
  // that a paused Patroni never adopted.
  for (const auto& node : nodes_) {
    try {
      if (PathExists(JoinPath(node.data_dir, "postmaster.pid")) && PostgresRunning(node))
        StopPostgresByHand(node, "immediate");
    } catch (const std::exception& e) {
      std::cerr << "could not stop PostgreSQL of " << node.name << ": " << e.what() << "\n";
    }
  }
  TerminateAll({etcd_pid_}, kEtcdStopTimeout);
}

std::string PatroniCluster::Logs() const {
  std::ostringstream out;
  out << "--- " << etcd_log_ << " ---\n" << Tail(ReadFileOr(etcd_log_), 4000) << "\n";
  for (const auto& node : nodes_) {
    out << "--- " << node.log_file << " ---\n" << Tail(ReadFileOr(node.log_file), 12000) << "\n";
    std::vector<std::pair<std::string, size_t>> more = {{node.manual_log, 6000}};
    if (options_.with_agents) {
      const AgentConfig& agent = node.agent.agent_config;
      more.insert(more.end(), {{agent.log_file, 16000},
                               {JoinPath(node.agent.dir, "agent.stderr"), 4000},
                               {agent.server_log, 6000}});
    }
    for (const auto& [file, bytes] : more)
      if (PathExists(file)) out << "--- " << file << " ---\n" << Tail(ReadFileOr(file), bytes) << "\n";
  }
  return out.str();
}

}  // namespace safe_upgrade::testing
