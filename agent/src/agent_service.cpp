// gRPC service implementation. All exceptions become a grpc::Status here, and only here.
#include "agent_service.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include "build_info.h"
#include "catalog.h"
#include "pg_conn.h"
#include "fs_util.h"
#include "jobs.h"
#include "retention.h"
#include "rollback_target.h"
#include "wal_archive.h"

namespace safe_upgrade {
namespace {

// Upgrade ids are positive bigints; anything else is rejected before it reaches a job.
grpc::Status ValidateUpgradeId(int64_t id) {
  if (id <= 0) return {grpc::StatusCode::INVALID_ARGUMENT, "upgrade_id must be a positive integer"};
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, const grpc::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

v1::JobState ToProto(JobStatus s) {
  switch (s) {
    case JobStatus::kRunning:
      return v1::JOB_STATE_RUNNING;
    case JobStatus::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case JobStatus::kFailed:
      return v1::JOB_STATE_FAILED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

JobBody BodyFor(const std::string& kind) {
  if (kind == "snapshot") return RunSnapshotJob;
  if (kind == "dryrun") return RunDryRunJob;
  if (kind == "rollback_target") return RunPrepareRollbackJob;
  if (kind == "apply") return RunApplyJob;
  if (kind == "verify") return RunVerifyJob;
  return RunRollbackJob;
}

}  // namespace

AgentService::AgentService(const AgentConfig& config, JobManager& jobs, Journal& journal, uint64_t system_identifier,
                           Authorizer authorize)
    : config_(config),
      jobs_(jobs),
      journal_(journal),
      system_identifier_(system_identifier),
      authorize_(std::move(authorize)) {}

// Authorizes the caller, runs body, and maps whatever it throws onto a status code.
template <typename F>
grpc::ServerUnaryReactor* AgentService::Handle(grpc::CallbackServerContext* ctx, const char* rpc, F&& body) {
  grpc::Status status = authorize_ ? authorize_(ctx) : grpc::Status::OK;
  if (status.ok()) {
    try {
      status = body();
    } catch (const BusyError& e) {
      // Retry later, as gRPC documents ABORTED: the request was fine, another job holds the agent.
      status = grpc::Status(grpc::StatusCode::ABORTED, e.what());
    } catch (const JobFailure& e) {
      status = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, e.what());
    } catch (const std::exception& e) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
  }
  if (!status.ok()) spdlog::warn("{} refused: {}", rpc, status.error_message());
  return Finish(ctx, status);
}

grpc::ServerUnaryReactor* AgentService::Ping(grpc::CallbackServerContext* ctx, const v1::PingRequest*,
                                             v1::PingResponse* resp) {
  return Handle(ctx, "Ping", [&] {
    resp->set_agent_version(kVersion);
    resp->set_api_version(kApiVersion);
    resp->set_system_identifier(system_identifier_);
    resp->set_data_directory(config_.data_directory);
    resp->set_active_job_id(jobs_.ActiveJobId());
    resp->set_snapshot_free_bytes(FreeBytes(config_.snapshot_dir));
    resp->set_data_free_bytes(FreeBytes(Dirname(config_.data_directory)));
    resp->set_disk_reserve_bytes(config_.disk_reserve_mb * 1024 * 1024);
    resp->set_wal_archive_writable(access(config_.wal_archive_dir.c_str(), W_OK) == 0);
    WalArchiveSummary archive = SummarizeWalArchive(config_);
    resp->set_wal_archive_newest(archive.newest_file);
    resp->set_wal_archive_oldest(archive.oldest_segment);
    resp->set_wal_archive_files(archive.files);
    resp->set_wal_archive_bytes(archive.bytes);
    resp->set_wal_archive_reported(true);
    if (auto needed = WalNeededFrom(config_); needed && archive.segment_bytes > 0)
      resp->set_wal_needed_from(WalSegmentName(1, *needed, archive.segment_bytes));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::StartJob(grpc::CallbackServerContext* ctx, const std::string& kind,
                                                 const v1::UpgradeRef* req, v1::JobRef* resp) {
  return Handle(ctx, kind.c_str(), [&] {
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    // Existence, not just format: a job only ever runs for an upgrade recorded in the catalog.
    try {
      auto conn = ConnectProduction(config_, "safe-upgrade-agent");
      if (conn->Exec("SELECT 1 FROM safe_upgrade.upgrades WHERE id = $1::bigint", {std::to_string(req->upgrade_id())})
              .Empty())
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "upgrade " + std::to_string(req->upgrade_id()) + " does not exist");
      // Rollback targets of upgrades that ended meanwhile only hold disk; a new job is the moment
      // to give it back (unless a job runs, which may be using its own).
      if (jobs_.ActiveJobId().empty()) DiscardRollbackTargetsExcept(config_, journal_, UpgradesThatMayRollBack(*conn));
    } catch (const PgError& e) {
      // Transient (the server restarts, refuses logins for a while): the caller retries.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the catalog: " + e.message());
    }
    resp->set_job_id(jobs_.Start(kind, req->upgrade_id(), BodyFor(kind)));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::StartSnapshot(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                      v1::JobRef* resp) {
  return StartJob(ctx, "snapshot", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartDryRun(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                    v1::JobRef* resp) {
  return StartJob(ctx, "dryrun", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartPrepareRollback(grpc::CallbackServerContext* ctx,
                                                             const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "rollback_target", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartApply(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                   v1::JobRef* resp) {
  return StartJob(ctx, "apply", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartVerify(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                    v1::JobRef* resp) {
  return StartJob(ctx, "verify", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartRollback(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                      v1::JobRef* resp) {
  return StartJob(ctx, "rollback", req, resp);
}

grpc::ServerUnaryReactor* AgentService::GetJob(grpc::CallbackServerContext* ctx, const v1::JobRef* req, v1::Job* resp) {
  return Handle(ctx, "GetJob", [&] {
    std::string kind;
    int64_t upgrade_id = 0;
    if (!ParseJobId(req->job_id(), kind, upgrade_id))
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed job id; expected <kind>-<upgrade id>");
    auto job = jobs_.Get(req->job_id(), req->event_cursor());
    if (!job) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + req->job_id() + " since the agent started");
    resp->set_job_id(job->id);
    resp->set_kind(job->kind);
    resp->set_upgrade_id(job->upgrade_id);
    resp->set_state(ToProto(job->status));
    resp->set_next_cursor(job->next_cursor);
    resp->set_error(job->error);
    resp->set_result_json(job->result.is_null() ? "{}" : job->result.dump());
    resp->set_progress(job->progress);
    for (const auto& e : job->events) {
      auto* ev = resp->add_events();
      ev->set_seq(e.seq);
      ev->set_at(e.at);
      ev->set_phase(e.phase);
      ev->set_level(e.level);
      ev->set_message(e.message);
      ev->set_detail_json(e.detail.is_null() ? "{}" : e.detail.dump());
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::GetUpgradeJournal(grpc::CallbackServerContext* ctx, const v1::UpgradeRef* req,
                                                          v1::UpgradeJournal* resp) {
  return Handle(ctx, "GetUpgradeJournal", [&] {
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    auto doc = journal_.Load(req->upgrade_id());
    resp->set_upgrade_id(req->upgrade_id());
    resp->set_apply(doc.value("apply", "none"));
    resp->set_rollback(doc.value("rollback", "none"));
    resp->set_rollback_step(doc.value("rollback_step", ""));
    resp->set_snapshot_id(doc.value("snapshot_id", ""));
    return grpc::Status::OK;
  });
}

}  // namespace safe_upgrade
