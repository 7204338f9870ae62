// gRPC implementation of AgentClient. Never include postgres.h here: its Min/Max macros break absl.
#include "rpc/agent_client.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file
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

AgentCallError FromStatus(const grpc::Status& s) {
  AgentCallError e;
  if (s.ok()) return e;
  e.ok = false;
  e.message = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
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
    default:
      break;
  }
  return e;
}

// How a failed job failed, from what its result says (the agent's jobs mark a failed check with
// "checks_failed" and a rollback refused before it began with stage "precheck"); a verification
// that failed otherwise could not run.
JobFailureKind FailureKindOf(const std::string& kind, const std::string& result_json) {
  nlohmann::json result = nlohmann::json::parse(result_json.empty() ? "{}" : result_json, nullptr, false);
  if (!result.is_object()) result = nlohmann::json::object();
  if (result.value("checks_failed", false)) return JobFailureKind::kChecksFailed;
  if (result.value("stage", "") == "precheck") return JobFailureKind::kRefused;
  if (kind == JobKindName(JobKind::kVerify)) return JobFailureKind::kCouldNotRun;
  return JobFailureKind::kFailed;
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
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::PingRequest req;
    v1::PingResponse resp;
    auto status = stub_->Ping(&ctx, req, &resp);
    if (status.ok()) {
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
    }
    return FromStatus(status);
  }

  AgentCallError StartJob(const std::string& kind, int64_t upgrade_id, std::string& job_id) override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::UpgradeRef req;
    req.set_upgrade_id(upgrade_id);
    v1::JobRef resp;
    grpc::Status status;
    if (kind == "snapshot")
      status = stub_->StartSnapshot(&ctx, req, &resp);
    else if (kind == "dryrun")
      status = stub_->StartDryRun(&ctx, req, &resp);
    else if (kind == "rollback_target")
      status = stub_->StartPrepareRollback(&ctx, req, &resp);
    else if (kind == "apply")
      status = stub_->StartApply(&ctx, req, &resp);
    else if (kind == "verify")
      status = stub_->StartVerify(&ctx, req, &resp);
    else if (kind == "rollback")
      status = stub_->StartRollback(&ctx, req, &resp);
    else {
      AgentCallError unknown;
      unknown.ok = false;
      unknown.refused = true;
      unknown.message = "unknown job kind " + kind;
      return unknown;
    }
    if (status.ok()) job_id = resp.job_id();
    return FromStatus(status);
  }

  AgentCallError GetJob(const std::string& job_id, int64_t cursor, AgentJob& out) override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::JobRef req;
    req.set_job_id(job_id);
    req.set_event_cursor(cursor);
    v1::Job resp;
    auto status = stub_->GetJob(&ctx, req, &resp);
    if (status.ok()) {
      out.job_id = resp.job_id();
      out.kind = resp.kind();
      out.upgrade_id = resp.upgrade_id();
      out.error = resp.error();
      out.result_json = resp.result_json();
      out.next_cursor = resp.next_cursor();
      out.progress = resp.progress();
      out.state = resp.state() == v1::JOB_STATE_RUNNING     ? "running"
                  : resp.state() == v1::JOB_STATE_SUCCEEDED ? "succeeded"
                                                            : "failed";
      out.failure = out.state == "failed" ? FailureKindOf(out.kind, out.result_json) : JobFailureKind::kNone;
      out.events.clear();
      for (const auto& e : resp.events())
        out.events.push_back(AgentEvent{e.seq(), e.at(), e.phase(), e.level(), e.message(), e.detail_json()});
    }
    return FromStatus(status);
  }

  AgentCallError GetJournal(int64_t upgrade_id, AgentJournal& out) override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::UpgradeRef req;
    req.set_upgrade_id(upgrade_id);
    v1::UpgradeJournal resp;
    auto status = stub_->GetUpgradeJournal(&ctx, req, &resp);
    if (status.ok()) {
      out.apply = resp.apply();
      out.rollback = resp.rollback();
      out.rollback_step = resp.rollback_step();
      out.snapshot_id = resp.snapshot_id();
    }
    return FromStatus(status);
  }

  AgentCallError GetInstalledVersions(int64_t upgrade_id, std::map<std::string, std::string>& out) override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    v1::UpgradeRef req;
    req.set_upgrade_id(upgrade_id);
    v1::InstalledVersions resp;
    auto status = stub_->GetInstalledVersions(&ctx, req, &resp);
    out.clear();
    if (status.ok())
      for (const auto& db : resp.databases()) out[db.datname()] = db.extversion();
    return FromStatus(status);
  }

  const std::string& address() const override { return address_; }

 private:
  void SetDeadline(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms_));
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
