// Agent hardening: peer credentials on the Unix socket, TLS with client certificates on TCP,
// and hostile requests (malformed, unknown, oversized ids; concurrent mutating jobs).
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include "base/config.h"
#include "base/fs_util.h"
#include "base/job.h"
#include "build_info.h"
#include "fault_report.h"
#include "pki.h"
#include "postgres/cluster.h"
#include "rpc/agent_client.h"
#include "rpc/proto_kinds.h"
#include "safe_upgrade/v1/agent.grpc.pb.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {
namespace {

using namespace std::chrono_literals;

std::string AgentBin(const TestCluster& c) { return JoinPath(JoinPath(c.info().dir, "bin"), "safe-upgrade-agent"); }

TEST(AgentSecurity, root_is_refused_at_the_socket_unless_allowed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to call as a user other than the agent's";
  RecordFault("root calls the agent's Unix socket, allow_root off",
              "refused (peer credentials: PERMISSION_DENIED, \"may not call\"); the attempt is logged");
  TestCluster c({.allow_root_callers = false});
  auto client = AgentClient::Create(c.info().agent_config.listen, 5000);
  AgentPing ping;
  auto err = client->Ping(ping);
  EXPECT_FALSE(err.ok);
  EXPECT_NE(err.message.find("may not call"), std::string::npos) << err.message;
  EXPECT_NE(c.AgentLog().find("refusing calls from pid"), std::string::npos) << c.AgentLog();
}

TEST(AgentSecurity, another_os_user_is_refused_even_when_the_socket_is_reachable) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another OS user";
  RecordFault("another OS user (nobody) calls the agent on the same host",
              "cannot reach the socket in its 0700 directory; with the directory opened, refused by the peer "
              "credential check (\"may not call\"); the agent's own user is served");
  TestCluster c;
  ProcessOptions as_nobody;
  as_nobody.run_as = "nobody";
  // The socket lives in a 0700 directory: another user cannot even connect.
  auto r = RunProcess({AgentBin(c), "ping", "--config", c.info().agent_config_path}, as_nobody);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  // Open the directory and the socket up: the peer credential check still refuses the call.
  std::string sock = c.info().agent_socket;
  chmod(Dirname(sock).c_str(), 0755);
  chmod(sock.c_str(), 0666);
  r = RunProcess({AgentBin(c), "ping", "--config", c.info().agent_config_path}, as_nobody);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("may not call"), std::string::npos) << r.err;
  // The agent's own user is served.
  ProcessOptions as_agent_user;
  as_agent_user.run_as = c.info().os_user;
  r = RunProcess({AgentBin(c), "ping", "--config", c.info().agent_config_path}, as_agent_user);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(c.info().data_dir), std::string::npos) << r.out;
}

// The agent's open sockets, by fd number.
std::set<int> AgentSocketFds(const TestCluster& c) {
  std::string pid = ReadFile(JoinPath(c.info().dir, "agent.pid"));
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  std::set<int> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + pid + "/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec && target.string().rfind("socket:", 0) == 0) out.insert(std::stoi(e.path().filename().string()));
  }
  return out;
}

// A gRPC connection to the agent's Unix socket whose peer credentials are uid's: the kernel
// records the connecting thread's effective uid, and the raw setresuid syscall changes it for
// this thread only (glibc's seteuid would change every thread's).
class PeerConnection {
 public:
  PeerConnection(const std::string& socket_path, uid_t uid) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket failed");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
    if (syscall(SYS_setresuid, -1, uid, -1) != 0) throw std::runtime_error("setresuid failed");
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (syscall(SYS_setresuid, -1, 0, -1) != 0) throw std::runtime_error("setresuid back failed");
    if (rc != 0) throw std::runtime_error("connect to " + socket_path + " failed");
    channel_ = grpc::CreateInsecureChannelFromFd("agent", fd);  // owns fd from here on
    stub_ = v1::Agent::NewStub(channel_);
  }
  grpc::Status Ping() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::PingResponse resp;
    return stub_->Ping(&ctx, v1::PingRequest(), &resp);
  }
  grpc::Status StartRollback(int64_t id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::StartJobRequest req;
    req.set_kind(v1::JOB_KIND_ROLLBACK);
    req.set_upgrade_id(id);
    v1::JobRef resp;
    return stub_->StartJob(&ctx, req, &resp);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

TEST(AgentSecurity, a_connection_is_judged_by_its_own_peer_even_when_it_reuses_an_earlier_connections_fd) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as two different users";
  RecordFault(
      "a refused peer connects right after an allowed one closed, and gets the same fd number in the "
      "agent (and the other way round)",
      "each connection is judged by its own peer credentials: the refused one gets PERMISSION_DENIED "
      "(\"may not call\") for every call, the allowed one is served");
  // The scheduler off: its own connection to the agent would come and go among the test's.
  TestCluster c({.settings = {{"safe_upgrade.enabled", "off"}}, .allow_root_callers = false});
  uid_t agent_uid = LookupUser(c.info().os_user)->uid;
  std::string sock = c.info().agent_socket;
  const std::set<int> idle = AgentSocketFds(c);
  // The one socket a connection adds to the agent, once the agent has accepted it.
  auto connection_fd = [&] {
    std::set<int> now = AgentSocketFds(c);
    std::vector<int> added;
    for (int fd : now)
      if (!idle.count(fd)) added.push_back(fd);
    EXPECT_EQ(added.size(), 1u);
    return added.empty() ? -1 : added[0];
  };
  auto closed = [&] { return WaitUntil([&] { return AgentSocketFds(c) == idle; }, 30s); };

  auto allowed = std::make_unique<PeerConnection>(sock, agent_uid);
  auto served = allowed->Ping();
  ASSERT_TRUE(served.ok()) << served.error_message();
  int fd = connection_fd();
  allowed.reset();
  ASSERT_TRUE(closed()) << "the agent did not close the allowed connection";

  auto refused = std::make_unique<PeerConnection>(sock, 0);
  auto ping = refused->Ping();
  EXPECT_EQ(ping.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ping.error_message();
  EXPECT_NE(ping.error_message().find("may not call"), std::string::npos) << ping.error_message();
  ASSERT_EQ(connection_fd(), fd) << "the refused connection did not reuse the fd number";
  auto rollback = refused->StartRollback(1);
  EXPECT_EQ(rollback.error_code(), grpc::StatusCode::PERMISSION_DENIED) << rollback.error_message();
  refused.reset();
  ASSERT_TRUE(closed()) << "the agent did not close the refused connection";

  auto allowed_again = std::make_unique<PeerConnection>(sock, agent_uid);
  served = allowed_again->Ping();
  EXPECT_TRUE(served.ok()) << served.error_message();
  EXPECT_EQ(connection_fd(), fd);
  EXPECT_NE(c.AgentLog().find("refusing calls from pid"), std::string::npos) << c.AgentLog();
}

TEST(AgentSecurity, tcp_requires_a_client_certificate_from_the_configured_ca) {
  RecordFault("TCP clients: plaintext, TLS without a client certificate, a certificate from another CA",
              "all refused; only a certificate from the configured CA is served");
  TestCluster c;
  Pki pki = MakePki(c);
  int port = FindFreePort();
  std::string address = "127.0.0.1:" + std::to_string(port);
  AgentConfig config = c.info().agent_config;
  config.listen = address;
  config.tls_ca_file = pki.ca;
  config.tls_cert_file = pki.server_cert;
  config.tls_key_file = pki.server_key;
  c.StopAgent();
  AtomicWriteFile(c.info().agent_config_path, RenderAgentConfig(config), 0644);
  ChownTree(c.info().agent_config_path, c.info().os_user);
  c.StartAgent();
  ASSERT_TRUE(WaitUntil([&] { return PortOpen(port); }, 30s)) << c.AgentLog();

  AgentPing ping;
  EXPECT_FALSE(AgentClient::Create(address, 3000)->Ping(ping).ok) << "plaintext must be refused";
  EXPECT_FALSE(AgentClient::Create(address, 3000, {pki.ca, "", ""})->Ping(ping).ok) << "no client certificate";
  EXPECT_FALSE(AgentClient::Create(address, 3000, {pki.ca, pki.rogue_cert, pki.rogue_key})->Ping(ping).ok)
      << "a certificate from another CA";
  auto ok = AgentClient::Create(address, 5000, {pki.ca, pki.client_cert, pki.client_key})->Ping(ping);
  EXPECT_TRUE(ok.ok) << ok.message;

  // The worker reaches it the same way, configured through GUCs.
  c.Exec("ALTER SYSTEM SET safe_upgrade.agent_address = '" + address + "'");
  c.Exec("ALTER SYSTEM SET safe_upgrade.agent_tls_ca_file = '" + pki.ca + "'");
  c.Exec("ALTER SYSTEM SET safe_upgrade.agent_tls_cert_file = '" + pki.client_cert + "'");
  c.Exec("ALTER SYSTEM SET safe_upgrade.agent_tls_key_file = '" + pki.client_key + "'");
  c.Exec("SELECT pg_reload_conf()");
  EXPECT_TRUE(WaitUntil(
      [&] {
        return c.Scalar("SELECT address FROM safe_upgrade.agent_status()") == address &&
               c.Scalar("SELECT reachable::text FROM safe_upgrade.agent_status()") == "true";
      },
      60s))
      << c.Scalar("SELECT last_error FROM safe_upgrade.agent_status()");
}

TEST(AgentSecurity, tcp_without_tls_refuses_to_start) {
  RecordFault("agent configured to listen on TCP without TLS",
              "refuses to start (exit 2), naming tls.ca_file; insecure_tcp is the only way around it");
  TestCluster c({.start_agent = false});
  AgentConfig config = c.info().agent_config;
  config.listen = "127.0.0.1:" + std::to_string(FindFreePort());
  std::string path = JoinPath(c.root(), "tcp.toml");
  AtomicWriteFile(path, RenderAgentConfig(config), 0644);
  ProcessOptions opt;
  opt.run_as = c.info().os_user;
  opt.timeout = 20s;
  auto r = RunProcess({AgentBin(c), "serve", "--config", path}, opt);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("requires tls.ca_file"), std::string::npos) << r.err;
}

class HostileRequests : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<TestCluster>(ClusterOptions{.settings = {{"safe_upgrade.enabled", "off"}}});
    channel_ = grpc::CreateChannel(cluster_->info().agent_config.listen, grpc::InsecureChannelCredentials());
    stub_ = v1::Agent::NewStub(channel_);
  }
  grpc::Status GetJob(const std::string& job_id, v1::Job* out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::JobRef req;
    req.set_job_id(job_id);
    v1::Job resp;
    auto s = stub_->GetJob(&ctx, req, &resp);
    if (out) *out = resp;
    return s;
  }
  grpc::Status StartSnapshot(int64_t id) { return StartJob(JobKind::kSnapshot, id); }
  grpc::Status StartJob(JobKind kind, int64_t id) { return StartWireJob(ToProto(kind), id); }
  // Any kind on the wire, known to the agent or not.
  grpc::Status StartWireJob(v1::JobKind kind, int64_t id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::StartJobRequest req;
    req.set_kind(kind);
    req.set_upgrade_id(id);
    v1::JobRef resp;
    return stub_->StartJob(&ctx, req, &resp);
  }
  grpc::Status GetJournal(int64_t id, v1::UpgradeJournal* out) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::UpgradeRef req;
    req.set_upgrade_id(id);
    return stub_->GetUpgradeJournal(&ctx, req, out);
  }
  int64_t InsertUpgrade(const std::string& extname, const std::string& state) {
    return std::stoll(cluster_->Scalar(
        "WITH u AS (INSERT INTO safe_upgrade.upgrades (extname, from_version, to_version, state) "
        "VALUES ($1, '1.4', '1.8', $2) RETURNING id), "
        "d AS (INSERT INTO safe_upgrade.upgrade_databases (upgrade_id, datname, from_version, "
        "update_path) SELECT id, current_database(), '1.4', '{1.4,1.8}' FROM u) "
        "SELECT id FROM u",
        {extname, state}));
  }
  std::unique_ptr<TestCluster> cluster_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

TEST_F(HostileRequests, path_traversal_and_malformed_job_ids_are_invalid_arguments) {
  RecordFault("job ids with path traversal, slashes, SQL, shell text, overlong or malformed",
              "INVALID_ARGUMENT for each; nothing runs");
  for (const std::string& id : std::vector<std::string>{"../../etc/passwd", "snapshot-1/../../x", "snapshot-0", "snapshot--5", "rm -rf /",
                               "snapshot-1; DROP TABLE x", std::string(200, 'a'), std::string("snapshot-1\0x", 12)}) {
    auto s = GetJob(id);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << id << ": " << s.error_message();
  }
}

TEST_F(HostileRequests, non_utf8_job_ids_are_rejected) {
  RecordFault("a job id that is not UTF-8",
              "INVALID_ARGUMENT");
  auto s = GetJob(std::string("snapshot-\xff\xfe", 11));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
}

TEST_F(HostileRequests, oversized_messages_are_rejected) {
  RecordFault("an oversized request message",
              "rejected before it reaches a handler");
  auto s = GetJob(std::string(1 << 20, 'x'));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
              s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
      << s.error_code() << " " << s.error_message();
}

TEST_F(HostileRequests, negative_and_unknown_upgrade_ids_are_refused) {
  RecordFault("upgrade ids that are negative, zero or not in the catalog; unknown job ids",
              "INVALID_ARGUMENT for malformed ids, NOT_FOUND for unknown ones");
  EXPECT_EQ(StartSnapshot(-1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(StartSnapshot(0).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto s = StartSnapshot(424242);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_EQ(GetJob("snapshot-424242").error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HostileRequests, an_unspecified_or_unknown_job_kind_is_an_invalid_argument_and_runs_nothing) {
  RecordFault(
      "StartJob with JOB_KIND_UNSPECIFIED, or a kind number the agent does not know",
      "INVALID_ARGUMENT naming the kinds it runs; no job starts, even for an upgrade at a job's step");
  auto& c = *cluster_;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  int64_t id = InsertUpgrade("hstore", "snapshotting");
  for (v1::JobKind kind :
       {v1::JOB_KIND_UNSPECIFIED, static_cast<v1::JobKind>(99), static_cast<v1::JobKind>(-1)}) {
    auto s = StartWireJob(kind, id);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << kind << ": " << s.error_message();
    EXPECT_NE(s.error_message().find("is not one this agent runs"), std::string::npos) << s.error_message();
  }
  AgentPing ping;
  ASSERT_TRUE(AgentClient::Create(c.info().agent_config.listen, 5000)->Ping(ping).ok);
  EXPECT_EQ(ping.active_job_id, "") << "a job started";
  for (JobKind kind : kAllJobKinds)
    EXPECT_EQ(GetJob(JobId(kind, id)).error_code(), grpc::StatusCode::NOT_FOUND) << JobKindName(kind);
}

TEST_F(HostileRequests, only_one_mutating_job_runs_at_a_time) {
  RecordFault("a second mutating job while one runs",
              "ABORTED (\"one job runs at a time\"; retry later); the first job finishes");
  auto& c = *cluster_;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'; CREATE EXTENSION citext VERSION '1.4';");
  std::string a = std::to_string(InsertUpgrade("hstore", "snapshotting"));
  std::string b = std::to_string(InsertUpgrade("citext", "snapshotting"));
  // Make the first job long enough to overlap: a database with some data to copy.
  c.Exec("CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g");
  ASSERT_TRUE(StartSnapshot(std::stoll(a)).ok());
  auto second = StartSnapshot(std::stoll(b));
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ABORTED) << second.error_message();
  EXPECT_NE(second.error_message().find("one job runs at a time"), std::string::npos) << second.error_message();
  v1::Job job;
  EXPECT_TRUE(WaitUntil(
      [&] {
        GetJob("snapshot-" + a, &job);
        return job.state() != v1::JOB_STATE_RUNNING;
      },
      300s));
}

TEST_F(HostileRequests, a_job_for_an_upgrade_not_at_that_step_is_refused) {
  RecordFault(
      "a client with valid credentials starts a job (rollback, apply, snapshot ...) for an upgrade whose "
      "catalog state is not that job's step, e.g. a rollback of a succeeded upgrade",
      "FAILED_PRECONDITION naming the state and how the step is reached (\"a rollback starts only through "
      "safe_upgrade.rollback(<id>)\"); no job starts");
  auto& c = *cluster_;
  c.Exec("CREATE EXTENSION hstore VERSION '1.4'");
  int64_t id = InsertUpgrade("hstore", "succeeded");
  std::string sid = std::to_string(id);
  auto rollback = StartJob(JobKind::kRollback, id);
  EXPECT_EQ(rollback.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << rollback.error_message();
  EXPECT_EQ(rollback.error_message(), "upgrade " + sid +
                                          " is succeeded, not rolling_back; a rollback starts only "
                                          "through safe_upgrade.rollback(" +
                                          sid + ") or a failed verification");
  const std::map<JobKind, std::string> steps = {
      {JobKind::kSnapshot, "snapshotting"},    {JobKind::kDryRun, "dry_running"},
      {JobKind::kRollbackTarget, "scheduled"}, {JobKind::kApply, "applying"},
      {JobKind::kVerify, "verifying"},         {JobKind::kRollback, "rolling_back"}};
  for (const auto& [kind, state] : steps) {
    auto s = StartJob(kind, id);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << JobKindName(kind) << ": " << s.error_message();
    EXPECT_NE(s.error_message().find("is succeeded, not " + state + "; "), std::string::npos)
        << s.error_message();
  }
  v1::Job job;
  EXPECT_EQ(GetJob("rollback-" + sid, &job).error_code(), grpc::StatusCode::NOT_FOUND) << "a job started";
  EXPECT_EQ(c.Scalar("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint", {sid}), "succeeded");
}

TEST_F(HostileRequests, the_journal_of_an_upgrade_neither_journaled_nor_in_the_catalog_is_not_found) {
  RecordFault(
      "GetUpgradeJournal for an upgrade id that is neither in the agent's journal nor in the catalog",
      "NOT_FOUND; an upgrade in the catalog, or only in the journal (as after a rollback), answers OK");
  auto& c = *cluster_;
  v1::UpgradeJournal journal;
  auto unknown = GetJournal(424242, &journal);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND) << unknown.error_message();
  EXPECT_EQ(unknown.error_message(), "upgrade 424242 does not exist");

  int64_t in_catalog = InsertUpgrade("hstore", "queued");
  auto known = GetJournal(in_catalog, &journal);
  EXPECT_TRUE(known.ok()) << known.error_message();
  EXPECT_EQ(journal.apply(), "none");

  // A rollback rewinds the catalog to before the upgrade existed; its journal still answers.
  const AgentConfig& config = c.info().agent_config;
  std::string path = JoinPath(config.JournalDir(), "upgrade-424243.json");
  AtomicWriteFile(path, R"({"upgrade_id": 424243, "apply": "committed", "rollback": "rolled_back"})", 0600);
  ChownTree(path, c.info().os_user);
  auto journaled = GetJournal(424243, &journal);
  EXPECT_TRUE(journaled.ok()) << journaled.error_message();
  EXPECT_EQ(journal.apply(), "committed");
  EXPECT_EQ(journal.rollback(), "rolled_back");
}

}  // namespace
}  // namespace safe_upgrade::testing

namespace safe_upgrade::testing {
namespace {

TEST(HealthCheckPrivileges, an_operators_check_runs_with_the_operators_privileges_not_the_agents) {
  RecordFault("an operator adds a health check that needs superuser (pg_read_file)",
              "checks run as the role that added them: `permission denied`, the dry run is `blocked`");
  TestCluster c;
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE ROLE op1 LOGIN IN ROLE safe_upgrade_operator;"
      "SET SESSION AUTHORIZATION op1;"
      "SELECT safe_upgrade.add_health_check('runs_as_op1', 'SELECT current_user = ''op1'' AND NOT (SELECT "
      "rolsuper FROM pg_roles WHERE rolname = current_user)', 'hstore');"
      "RESET SESSION AUTHORIZATION;");
  int64_t id = c.BeginUpgrade("hstore", "1.8", R"({"dry_run_only": true})");
  EXPECT_EQ(c.WaitForTerminalState(id, std::chrono::seconds(300)), "validated") << c.Events(id);

  // A check that needs superuser fails when an operator added it: no privilege escalation.
  c.Exec(
      "SET SESSION AUTHORIZATION op1;"
      "SELECT safe_upgrade.add_health_check('reads_server_files', "
      "'SELECT pg_read_file(''PG_VERSION'') IS NOT NULL', 'hstore');"
      "RESET SESSION AUTHORIZATION;");
  int64_t second = c.BeginUpgrade("hstore", "1.8", R"({"dry_run_only": true})");
  EXPECT_EQ(c.WaitForTerminalState(second, std::chrono::seconds(300)), "blocked") << c.Events(second);
  EXPECT_NE(c.Events(second).find("permission denied"), std::string::npos) << c.Events(second);
}

// A dry run of hstore 1.4 -> 1.8 through the scheduler, expected to end in state; its events.
std::string HstoreDryRunEvents(const TestCluster& c, const std::string& state) {
  int64_t id = c.BeginUpgrade("hstore", "1.8", R"({"dry_run_only": true})");
  EXPECT_EQ(c.WaitForTerminalState(id, std::chrono::seconds(300)), state) << c.Events(id);
  return c.Events(id);
}

// Whether events hold the outcome line of check name: `check "name" <outcome>`.
bool CheckEnded(const std::string& events, const std::string& name, const std::string& outcome) {
  return events.find("check \"" + name + "\" " + outcome) != std::string::npos;
}

TEST(HealthCheckPrivileges, a_check_that_resets_its_role_cannot_reach_the_agents_superuser) {
  RecordFault(
      "an operator's health check resets its role (`set_config('role', 'none', true)`) to run as the agent's "
      "superuser",
      "refused by PostgreSQL (`cannot set parameter \"role\" within security-definer function`): the check "
      "fails and the dry run is `blocked`; the operator's honest check passes");
  TestCluster c;
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE ROLE op1 LOGIN IN ROLE safe_upgrade_operator;"
      "SET SESSION AUTHORIZATION op1;"
      "SELECT safe_upgrade.add_health_check('honest', "
      "  'SELECT current_user = ''op1'' AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = "
      "current_user)', "
      "  'hstore');"
      "SELECT safe_upgrade.add_health_check('resets_role', "
      "  'SELECT set_config(''role'', ''none'', true) IS NOT NULL "
      "     AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)', "
      "  'hstore');"
      "RESET SESSION AUTHORIZATION;");
  std::string events = HstoreDryRunEvents(c, "blocked");
  EXPECT_TRUE(CheckEnded(events, "honest", "passed: returned true")) << events;
  EXPECT_TRUE(CheckEnded(events, "resets_role",
                         "failed: cannot set parameter \"role\" within security-definer function"))
      << events;
}

TEST(HealthCheckPrivileges, a_check_whose_owner_was_dropped_fails_instead_of_running_as_the_agent) {
  RecordFault("a health check whose owner role was dropped after it added the check",
              "the check does not run (\"role ... that owns health check ... does not exist\"); the dry run "
              "is `blocked`");
  TestCluster c;
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE ROLE gone LOGIN IN ROLE safe_upgrade_operator;"
      "SET SESSION AUTHORIZATION gone;"
      "SELECT safe_upgrade.add_health_check('orphaned', 'SELECT true', 'hstore');"
      "RESET SESSION AUTHORIZATION;"
      "DROP ROLE gone;");
  std::string events = HstoreDryRunEvents(c, "blocked");
  EXPECT_TRUE(
      CheckEnded(events, "orphaned", "failed: role \"gone\" that owns health check orphaned does not exist"))
      << events;
}

TEST(HealthCheckPrivileges, a_views_functions_are_planned_as_the_views_owner_not_as_superuser) {
  RecordFault("a view whose IMMUTABLE function runs at plan time, owned by a role without superuser",
              "the built-in \"dependent objects work\" check plans it as its owner (the function raises when "
              "run as anyone else); the dry run is `validated`");
  TestCluster c;
  // The function fails the plan unless it runs as the view's owner, naming whom it ran as.
  c.Exec(
      "CREATE EXTENSION hstore VERSION '1.4';"
      "CREATE ROLE view_owner;"
      "CREATE TABLE items (id int PRIMARY KEY, h hstore);"
      "INSERT INTO items VALUES (1, 'k=>v');"
      "CREATE FUNCTION planned_by() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
      "IF current_user <> 'view_owner' THEN RAISE EXCEPTION 'planned as %', current_user; END IF; "
      "RETURN 1; END $$;"
      "CREATE VIEW item_keys AS SELECT akeys(h) AS keys FROM items WHERE id = planned_by();"
      "ALTER TABLE items OWNER TO view_owner;"
      "ALTER VIEW item_keys OWNER TO view_owner;");
  std::string events = HstoreDryRunEvents(c, "validated");
  EXPECT_EQ(events.find("planned as"), std::string::npos) << events;
  EXPECT_TRUE(CheckEnded(events, "dependent objects work", "passed")) << events;
}

}  // namespace
}  // namespace safe_upgrade::testing
