// gRPC implementation of AgentClient. Never include postgres.h here: its Min/Max macros break absl.
#include "rpc/agent_client.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file
#include "rpc/proto_kinds.h"
#include "safe_upgrade/v1/agent.grpc.pb.h"

namespace safe_upgrade {
namespace {

// Blocks every signal for the lifetime of the guard (restoring the old mask afterwards), so that
// threads started meanwhile inherit a fully blocked mask.
class SignalBlockGuard {
 public:
  SignalBlockGuard() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~SignalBlockGuard() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }

 private:
  sigset_t saved_;
};

std::string ReadPem(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The call's outcome by its status code. An UNAVAILABLE that carries the agent's trailing mark
// came from the agent (it is up, and asks to be called again); without it, from the transport.
AgentCallError FromStatus(const grpc::Status& s, const grpc::ClientContext& ctx) {
  AgentCallError e;
  if (s.ok()) return e;
  e.ok = false;
  e.message = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      if (ctx.GetServerTrailingMetadata().count("safe-upgrade-agent")) {
        e.unavailable = true;
        break;
      }
      [[fallthrough]];
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      e.unreachable = true;
      if (e.message.empty()) e.message = "agent unreachable";
      break;
    case grpc::StatusCode::NOT_FOUND:
      e.not_found = true;
      break;
    case grpc::StatusCode::ABORTED:
      e.busy = true;
      break;
    case grpc::StatusCode::FAILED_PRECONDITION:
      e.refused = true;
      break;
    case grpc::StatusCode::INVALID_ARGUMENT:
      e.invalid = true;
      break;
    default:
      break;
  }
  return e;
}

v1::UpgradeRef UpgradeRefOf(int64_t upgrade_id) {
  v1::UpgradeRef ref;
  ref.set_upgrade_id(upgrade_id);
  return ref;
}

class GrpcAgentClient final : public AgentClient {
 public:
  GrpcAgentClient(const std::string& address, int deadline_ms, const AgentTls& tls)
      : address_(address), deadline_ms_(deadline_ms) {
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (tls.Enabled()) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = ReadPem(tls.ca_file);
      ssl.pem_cert_chain = tls.cert_file.empty() ? "" : ReadPem(tls.cert_file);
      ssl.pem_private_key = tls.key_file.empty() ? "" : ReadPem(tls.key_file);
      SignalBlockGuard guard;
      creds = grpc::SslCredentials(ssl);
    }
    SignalBlockGuard guard;
    if (!creds) creds = grpc::InsecureChannelCredentials();
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    channel_ = grpc::CreateCustomChannel(address, creds, args);
    stub_ = v1::Agent::NewStub(channel_);
  }

  ~GrpcAgentClient() override {
    SignalBlockGuard guard;
    stub_.reset();
    channel_.reset();
  }

  AgentCallError Ping(AgentPing& out) override {
    v1::PingResponse resp;
    AgentCallError err = Call(&v1::Agent::Stub::Ping, v1::PingRequest(), resp);
    if (err.ok) {
      out.agent_version = resp.agent_version();
      out.api_version = resp.api_version();
      out.data_directory = resp.data_directory();
      out.system_identifier = resp.system_identifier();
      out.active_job_id = resp.active_job_id();
      out.snapshot_free_bytes = resp.snapshot_free_bytes();
      out.data_free_bytes = resp.data_free_bytes();
      out.wal_archive_newest = resp.wal_archive_newest();
      out.wal_archive_oldest = resp.wal_archive_oldest();
      out.wal_needed_from = resp.wal_needed_from();
      out.wal_archive_files = resp.wal_archive_files();
      out.wal_archive_bytes = resp.wal_archive_bytes();
      out.wal_archive_reported = resp.wal_archive_reported();
      out.disk_reserve_bytes = resp.disk_reserve_bytes();
      out.wal_archive_writable = resp.wal_archive_writable();
      out.snapshot_method_configured = resp.snapshot_method_configured();
      out.snapshot_method = resp.snapshot_method();
      out.snapshot_method_reason = resp.snapshot_method_reason();
      out.snapshot_method_possible = resp.snapshot_method_possible();
      out.facts_age_ms = resp.facts_age_ms();
      out.backend_kind = resp.backend_kind();
      out.backend_stanza = resp.backend_stanza();
      out.backend_checked = resp.backend_checked();
      out.backend_check_ok = resp.backend_check_ok();
      out.backend_problem = resp.backend_problem();
      out.backend_checked_age_ms = resp.backend_checked_age_ms();
      out.backend_summary_json = resp.backend_summary_json();
      out.role = resp.role();
      out.standbys_json = resp.standbys_json();
      out.pg_rewind_available = resp.pg_rewind_available();
      out.stale_libraries_json = resp.stale_libraries_json();
      out.standby_signal = resp.standby_signal();
    }
    return err;
  }

  AgentCallError StartJob(JobKind kind, int64_t upgrade_id, std::string& job_id) override {
    v1::StartJobRequest req;
    req.set_kind(ToProto(kind));
    req.set_upgrade_id(upgrade_id);
    v1::JobRef resp;
    AgentCallError err = Call(&v1::Agent::Stub::StartJob, req, resp);
    if (err.ok) job_id = resp.job_id();
    return err;
  }

  AgentCallError GetJob(const std::string& job_id, int64_t cursor, AgentJob& out) override {
    v1::JobRef req;
    req.set_job_id(job_id);
    req.set_event_cursor(cursor);
    v1::Job resp;
    AgentCallError err = Call(&v1::Agent::Stub::GetJob, req, resp);
    if (err.ok) {
      out.job_id = resp.job_id();
      out.kind = FromProto(resp.kind());
      out.upgrade_id = resp.upgrade_id();
      out.error = resp.error();
      out.result_json = resp.result_json();
      out.next_cursor = resp.next_cursor();
      out.progress = resp.progress();
      out.state = resp.state() == v1::JOB_STATE_RUNNING     ? "running"
                  : resp.state() == v1::JOB_STATE_SUCCEEDED ? "succeeded"
                                                            : "failed";
      // How a failed job failed is the agent's to say; a failure it did not classify is plain.
      out.failure = JobFailureKind::kNone;
      if (out.state == "failed") {
        out.failure = FromProto(resp.failure());
        if (out.failure == JobFailureKind::kNone) out.failure = JobFailureKind::kFailed;
      }
      out.events.clear();
      for (const auto& e : resp.events())
        out.events.push_back(AgentEvent{e.seq(), e.at(), e.phase(), e.level(), e.message(), e.detail_json()});
    }
    return err;
  }

  AgentCallError GetJournal(int64_t upgrade_id, AgentJournal& out) override {
    v1::UpgradeJournal resp;
    AgentCallError err = Call(&v1::Agent::Stub::GetUpgradeJournal, UpgradeRefOf(upgrade_id), resp);
    if (err.ok) {
      out.apply = resp.apply();
      out.rollback = resp.rollback();
      out.rollback_step = resp.rollback_step();
      out.snapshot_id = resp.snapshot_id();
    }
    return err;
  }

  AgentCallError GetInstalledVersions(int64_t upgrade_id, std::map<std::string, std::string>& out) override {
    v1::InstalledVersions resp;
    AgentCallError err = Call(&v1::Agent::Stub::GetInstalledVersions, UpgradeRefOf(upgrade_id), resp);
    out.clear();
    if (err.ok)
      for (const auto& db : resp.databases()) out[db.datname()] = db.extversion();
    return err;
  }

  AgentCallError CheckStandbyFiles(int64_t upgrade_id, AgentStandbyFiles& out) override {
    v1::StandbyFiles resp;
    AgentCallError err = Call(&v1::Agent::Stub::CheckStandbyFiles, UpgradeRefOf(upgrade_id), resp);
    if (err.ok) {
      out.extname = resp.extname();
      out.to_version = resp.to_version();
      out.ready = resp.ready();
      out.problems.assign(resp.problems().begin(), resp.problems().end());
      out.data_directory = resp.data_directory();
      out.share_dir = resp.share_dir();
      out.lib_dir = resp.lib_dir();
    }
    return err;
  }

  const std::string& address() const override { return address_; }

 private:
  // One unary call with the client's deadline.
  template <typename Request, typename Response>
  AgentCallError Call(grpc::Status (v1::Agent::Stub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                      const Request& req, Response& resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms_));
    grpc::Status status = (stub_.get()->*method)(&ctx, req, &resp);
    return FromStatus(status, ctx);
  }
  std::string address_;
  int deadline_ms_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Agent::Stub> stub_;
};

}  // namespace

std::unique_ptr<AgentClient> AgentClient::Create(const std::string& address, int deadline_ms, const AgentTls& tls) {
  return std::make_unique<GrpcAgentClient>(address, deadline_ms, tls);
}

}  // namespace safe_upgrade
