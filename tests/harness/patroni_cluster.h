// Test harness: a throwaway Patroni cluster on loopback: one etcd (the etcd3 API, which Patroni
// 3.0.2 speaks to etcd 3.4 without --enable-v2) and two Patroni nodes managing PostgreSQL 15, each
// with its own data directory, port, socket directory and REST port, trust authentication, a
// replication user and pg_rewind. node1 bootstraps the cluster and node2 is cloned from it.
// PostgreSQL, Patroni and etcd run as the postgres OS user when the tests run as root. Everything
// lives in one temporary root, always stopped and removed afterwards; the logs are printed when a
// test failed. With agents (PatroniClusterOptions.with_agents), each node also runs our agent,
// laid out like a sandbox in the node's directory (sandbox.h): node1's as the primary's (it lists
// node2's agent and pauses Patroni through node1's REST API), node2's as a standby's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/process.h"
#include "postgres/patroni.h"
#include "postgres/pg_conn.h"
#include "sandbox/sandbox.h"

namespace safe_upgrade::testing {

struct PatroniClusterOptions {
  // Extra PostgreSQL parameters, in each node's postgresql.parameters (e.g.
  // shared_preload_libraries). Patroni takes the few it keeps cluster-wide (wal_level,
  // max_connections, max_wal_senders ...) from the DCS instead: those go in dcs_parameters.
  std::map<std::string, std::string> parameters;
  // Added to bootstrap.dcs.postgresql.parameters, written to the DCS when node1 bootstraps.
  std::map<std::string, std::string> dcs_parameters;
  // Patroni's loop period: pause and resume, and a member's role, show up to this long later.
  std::chrono::seconds loop_wait{1};
  std::string scope = "su-test";
  // How long the constructor waits for node1 to bootstrap and hold the leader key (and, with
  // agents, for node2 to stream from it).
  std::chrono::seconds bootstrap_timeout{120};
  // Run safe-upgrade-agent next to each node: the servers preload the extension, point its worker
  // at their node's agent and archive WAL through it (SandboxAgentSettings); the agents start once
  // node2 streams from node1. The test creates the extension on the leader.
  bool with_agents = false;
};

// One Patroni node and its PostgreSQL.
struct PatroniNode {
  std::string name;      // Patroni's member name: "node1", "node2"
  std::string rest_url;  // "http://127.0.0.1:<rest port>"
  int port = 0;          // PostgreSQL's, on 127.0.0.1 and in socket_dir
  std::string data_dir;
  std::string socket_dir;
  std::string config_file;  // Patroni's YAML
  std::string log_file;     // Patroni's log, with the output of the PostgreSQL it started
  std::string manual_log;   // the server log of a PostgreSQL started by hand (StartPostgresByHand)
  // The node's agent, laid out like a sandbox in the node's directory (data/ and run/ are the
  // node's data_dir and socket_dir); started only with PatroniClusterOptions.with_agents.
  SandboxInfo agent;
  std::string ConnInfo(const std::string& dbname = "postgres") const;
};

// Why a Patroni cluster cannot run here ("" when it can): patroni or etcd (Debian packages
// patroni and etcd-server, which `make deps` installs as root) or PostgreSQL 15 is missing, or we
// are root and there is no postgres OS user to run them as. Tests GTEST_SKIP with this reason.
std::string PatroniUnavailable();

class PatroniCluster {
 public:
  // Starts etcd and node1, waits until node1 holds the leader key, then starts node2 (which
  // clones node1 with pg_basebackup). Throws with the logs when any of it does not come up.
  explicit PatroniCluster(PatroniClusterOptions options = {});
  // Stop(), then removes the temporary root (kept with SU_KEEP_TEST_DIRS set).
  ~PatroniCluster();
  PatroniCluster(const PatroniCluster&) = delete;
  PatroniCluster& operator=(const PatroniCluster&) = delete;

  // Polls GET /cluster until a member holds the leader key and runs, and the other runs as a
  // replica whose walreceiver streams from it (the leader's pg_stat_replication says so). Throws
  // std::runtime_error with the last cluster view when the deadline passes first.
  void WaitForLeaderAndStreamingReplica(std::chrono::steady_clock::time_point deadline) const;

  // The members by their current role (GET /cluster); throw when no member has that role.
  const PatroniNode& Leader() const;
  const PatroniNode& Replica() const;
  const std::vector<PatroniNode>& nodes() const { return nodes_; }
  const PatroniNode& Node(const std::string& name) const;
  std::string RestUrl(size_t i) const { return nodes_.at(i).rest_url; }
  PatroniClient Client(size_t i, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // GET /cluster from the first node that answers.
  PatroniClusterView ClusterView() const;
  std::string EtcdUrl() const;

  // PostgreSQL controlled behind Patroni's back, as the agent does while Patroni is paused:
  // pg_ctl as the service user. StartPostgresByHand logs to node.manual_log and waits for the
  // server to accept connections.
  void StopPostgresByHand(const PatroniNode& node, const std::string& mode = "immediate") const;
  void StartPostgresByHand(const PatroniNode& node) const;
  bool PostgresRunning(const PatroniNode& node) const;

  // Stops the agents (SIGTERM), both Patroni nodes (SIGTERM, then SIGKILL after a deadline), any PostgreSQL
  // still running (pg_ctl stop -m immediate) and etcd. Idempotent; never throws.
  void Stop();

  const std::string& root() const { return root_; }
  // The logs of etcd, each Patroni, each hand-started PostgreSQL and each agent, with the server
  // log of a PostgreSQL the agent started (tails), for a failure.
  std::string Logs() const;
  const std::string& os_user() const { return os_user_; }

 private:
  void StartEtcd();
  void WriteNodeConfig(const PatroniNode& node) const;
  void InstallAgent(PatroniNode& node) const;
  void StartAgents();
  pid_t StartPatroni(const PatroniNode& node) const;
  ProcessOptions AsServiceUser(std::chrono::milliseconds timeout) const;

  PatroniClusterOptions options_;
  std::string root_;
  std::string os_user_;
  int etcd_client_port_ = 0, etcd_peer_port_ = 0;
  std::string etcd_log_;
  pid_t etcd_pid_ = -1;
  std::vector<PatroniNode> nodes_;
  std::vector<pid_t> patroni_pids_;
  bool agents_started_ = false;
  bool stopped_ = false;
};

}  // namespace safe_upgrade::testing
