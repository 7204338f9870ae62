// gRPC service implementation. All exceptions become a grpc::Status here, and only here.
#include "daemon/agent_service.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <optional>

#include "base/fs_util.h"
#include "build_info.h"
#include "jobs/jobs.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"
#include "postgres/upgrade_runner.h"
#include "postgres/wal_archive.h"
#include "scratch/rollback_target.h"
#include "snapshots/retention.h"
#include "storage/reflink.h"

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

// Every job the agent runs: its body, and the one catalog state its upgrade must be in for it to
// start (the state machine's job-following states). Holding a client certificate is not enough
// to snapshot, apply or roll back production: the catalog, which only the extension's SQL
// functions and its worker change, must say that this step is due.
struct JobKindSpec {
  const char* kind;
  const char* state;
  nlohmann::json (*body)(JobContext&);
  const char* how;  // how that state is reached, for the refusal; {id} is the upgrade id
};

const JobKindSpec kJobKinds[] = {
    {"snapshot", "snapshotting", RunSnapshotJob,
     "a snapshot is taken only when safe_upgrade.begin() starts an upgrade"},
    {"dryrun", "dry_running", RunDryRunJob, "a dry run runs only right after the upgrade's snapshot"},
    {"rollback_target", "scheduled", RunPrepareRollbackJob,
     "a rollback target is prepared only while the upgrade is scheduled, before its restore point"},
    {"apply", "applying", RunApplyJob,
     "production is upgraded only once the restore point of a validated, scheduled upgrade is archived"},
    {"verify", "verifying", RunVerifyJob, "production is verified only right after the upgrade's apply"},
    {"rollback", "rolling_back", RunRollbackJob,
     "a rollback starts only through safe_upgrade.rollback({id}) or a failed verification"},
};

const JobKindSpec* FindJobKind(const std::string& kind) {
  for (const auto& spec : kJobKinds)
    if (kind == spec.kind) return &spec;
  return nullptr;
}

std::string WithId(std::string text, const std::string& id) {
  for (auto pos = text.find("{id}"); pos != std::string::npos; pos = text.find("{id}", pos))
    text.replace(pos, 4, id);
  return text;
}

// The upgrade's state in the catalog; std::nullopt when the catalog has no such upgrade.
std::optional<std::string> CatalogState(PgConn& conn, int64_t upgrade_id) {
  auto r = conn.Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                     {std::to_string(upgrade_id)});
  if (r.Empty()) return std::nullopt;
  return r.rows[0][0].value_or("");
}

grpc::Status UnknownUpgrade(int64_t upgrade_id) {
  return {grpc::StatusCode::NOT_FOUND, "upgrade " + std::to_string(upgrade_id) + " does not exist"};
}

}  // namespace

AgentService::AgentService(const AgentConfig& config, JobManager& jobs, Journal& journal,
                           uint64_t system_identifier)
    : config_(config), jobs_(jobs), journal_(journal), system_identifier_(system_identifier) {}

// Runs body and maps whatever it throws onto a status code.
template <typename F>
grpc::ServerUnaryReactor* AgentService::Handle(grpc::CallbackServerContext* ctx, const char* rpc, F&& body) {
  grpc::Status status;
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
    SnapshotMethodChoice method = ChooseSnapshotMethod(config_);
    resp->set_snapshot_method_configured(method.configured);
    resp->set_snapshot_method(method.method);
    resp->set_snapshot_method_reason(method.reason);
    resp->set_snapshot_method_possible(method.possible);
    if (auto needed = WalNeededFrom(config_); needed && archive.segment_bytes > 0)
      resp->set_wal_needed_from(WalSegmentName(1, *needed, archive.segment_bytes));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::StartJob(grpc::CallbackServerContext* ctx, const std::string& kind,
                                                 const v1::UpgradeRef* req, v1::JobRef* resp) {
  return Handle(ctx, kind.c_str(), [&] {
    // Job kinds come from the RPC methods, never from the request; an unknown one is a bug.
    const JobKindSpec* spec = FindJobKind(kind);
    if (!spec) return grpc::Status(grpc::StatusCode::INTERNAL, "no job kind " + kind);
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    // Existence and state, not just format: a job only ever runs for an upgrade that the catalog
    // says is at that job's step.
    try {
      auto conn = ConnectProduction(config_, "safe-upgrade-agent");
      auto state = CatalogState(*conn, req->upgrade_id());
      if (!state) return UnknownUpgrade(req->upgrade_id());
      std::string id = std::to_string(req->upgrade_id());
      if (*state != spec->state)
        return grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            "upgrade " + id + " is " + *state + ", not " + spec->state + "; " + WithId(spec->how, id));
      // Rollback targets of upgrades that ended meanwhile only hold disk; a new job is the moment
      // to give it back (unless a job runs, which may be using its own).
      if (jobs_.ActiveJobId().empty())
        DiscardRollbackTargetsExcept(config_, journal_, UpgradesThatMayRollBack(*conn));
    } catch (const PgError& e) {
      // Transient (the server restarts, refuses logins for a while): the caller retries.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the catalog: " + e.message());
    }
    resp->set_job_id(jobs_.Start(kind, req->upgrade_id(), spec->body));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::StartSnapshot(grpc::CallbackServerContext* ctx,
                                                      const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "snapshot", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartDryRun(grpc::CallbackServerContext* ctx,
                                                    const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "dryrun", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartPrepareRollback(grpc::CallbackServerContext* ctx,
                                                             const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "rollback_target", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartApply(grpc::CallbackServerContext* ctx,
                                                   const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "apply", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartVerify(grpc::CallbackServerContext* ctx,
                                                    const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "verify", req, resp);
}
grpc::ServerUnaryReactor* AgentService::StartRollback(grpc::CallbackServerContext* ctx,
                                                      const v1::UpgradeRef* req, v1::JobRef* resp) {
  return StartJob(ctx, "rollback", req, resp);
}

grpc::ServerUnaryReactor* AgentService::GetJob(grpc::CallbackServerContext* ctx, const v1::JobRef* req,
                                               v1::Job* resp) {
  return Handle(ctx, "GetJob", [&] {
    std::string kind;
    int64_t upgrade_id = 0;
    if (!ParseJobId(req->job_id(), kind, upgrade_id))
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "malformed job id; expected <kind>-<upgrade id>");
    auto job = jobs_.Get(req->job_id(), req->event_cursor());
    if (!job)
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "no job " + req->job_id() + " since the agent started");
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

grpc::ServerUnaryReactor* AgentService::GetUpgradeJournal(grpc::CallbackServerContext* ctx,
                                                          const v1::UpgradeRef* req,
                                                          v1::UpgradeJournal* resp) {
  return Handle(ctx, "GetUpgradeJournal", [&] {
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    std::optional<JournalDoc> journaled;
    try {
      journaled = journal_.Find(req->upgrade_id());
    } catch (const JournalError& e) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, e.what());
    }
    // An upgrade the journal does not know must at least be in the catalog. One the journal knows
    // may be missing from it: a rollback rewinds the catalog to before the upgrade was begun.
    if (!journaled) {
      try {
        auto conn = ConnectProduction(config_, "safe-upgrade-agent");
        if (!CatalogState(*conn, req->upgrade_id())) return UnknownUpgrade(req->upgrade_id());
      } catch (const PgError& e) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the catalog: " + e.message());
      }
    }
    resp->set_upgrade_id(req->upgrade_id());
    const JournalDoc doc = journaled.value_or(JournalDoc{});
    resp->set_apply(ToString(doc.apply));
    resp->set_rollback(ToString(doc.rollback));
    resp->set_rollback_step(doc.rollback_step);
    resp->set_snapshot_id(doc.snapshot_id);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::GetInstalledVersions(grpc::CallbackServerContext* ctx,
                                                             const v1::UpgradeRef* req,
                                                             v1::InstalledVersions* resp) {
  return Handle(ctx, "GetInstalledVersions", [&] {
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    try {
      auto conn = ConnectProduction(config_, "safe-upgrade-agent");
      if (!CatalogState(*conn, req->upgrade_id())) return UnknownUpgrade(req->upgrade_id());
      UpgradeRecord upgrade = LoadUpgrade(*conn, req->upgrade_id());
      resp->set_upgrade_id(req->upgrade_id());
      for (const auto& [datname, version] : InstalledVersions(config_, upgrade)) {
        auto* db = resp->add_databases();
        db->set_datname(datname);
        db->set_extversion(version);
      }
    } catch (const PgError& e) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "cannot read the installed versions: " + e.message());
    }
    return grpc::Status::OK;
  });
}

}  // namespace safe_upgrade
