// gRPC service implementation. All exceptions become a grpc::Status here, and only here.
// Status codes follow gRPC's doc/statuscodes.md, as the proto's header comment lists them.
#include "daemon/agent_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "base/fs_util.h"
#include "build_info.h"
#include "checks/extension_files.h"
#include "postgres/pgbackrest_summary.h"
#include "core/state_table.h"
#include "jobs/jobs.h"
#include "jobs/registry.h"
#include "postgres/catalog.h"
#include "postgres/pg_conn.h"
#include "postgres/upgrade_runner.h"
#include "rpc/proto_kinds.h"

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

// The upgrade's state in the catalog; std::nullopt when the catalog has no such upgrade.
std::optional<std::string> CatalogState(PgConn& conn, int64_t upgrade_id) {
  auto r = conn.Exec("SELECT state FROM safe_upgrade.upgrades WHERE id = $1::bigint",
                     {std::to_string(upgrade_id)});
  if (r.Empty()) return std::nullopt;
  return r.rows[0][0].value_or("");
}

// The admission check's connection. The check stays in the handler on purpose (the caller must
// learn at once whether the job starts, and why not), so it is bounded: a connect timeout and a
// statement timeout that end within the worker's 5 s deadline, after which a production that
// hangs is UNAVAILABLE (call again) instead of a handler held for as long as libpq waits.
std::unique_ptr<PgConn> ConnectForAdmission(const AgentConfig& config) {
  auto conn = std::make_unique<PgConn>(config.ConnInfo("safe-upgrade-agent"), std::chrono::seconds(3));
  conn->Exec("SET statement_timeout = '1s'");
  return conn;
}

grpc::Status UnknownUpgrade(int64_t upgrade_id) {
  return {grpc::StatusCode::NOT_FOUND, "upgrade " + std::to_string(upgrade_id) + " does not exist"};
}

}  // namespace

AgentService::AgentService(const AgentConfig& config, JobManager& jobs, Journal& journal,
                           const HostFactsRefresher& facts, const StandbyAgentsWatcher& standbys,
                           uint64_t system_identifier)
    : config_(config),
      jobs_(jobs),
      journal_(journal),
      facts_(facts),
      standbys_(standbys),
      system_identifier_(system_identifier) {}

// Runs body and maps whatever it throws onto a status code.
template <typename F>
grpc::ServerUnaryReactor* AgentService::Handle(grpc::CallbackServerContext* ctx, const char* rpc, F&& body) {
  // Marks the answer as the agent's: a client tells an UNAVAILABLE from here (retry the call)
  // from one of the transport (the agent cannot be reached).
  ctx->AddTrailingMetadata("safe-upgrade-agent", kVersion);
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
    HostFacts facts = facts_.Current();
    resp->set_agent_version(kVersion);
    resp->set_api_version(kApiVersion);
    resp->set_system_identifier(system_identifier_);
    resp->set_data_directory(config_.data_directory);
    resp->set_active_job_id(jobs_.ActiveJobId());
    resp->set_snapshot_free_bytes(facts.snapshot_free_bytes);
    resp->set_data_free_bytes(facts.data_free_bytes);
    resp->set_disk_reserve_bytes(config_.disk_reserve_mb * 1024 * 1024);
    resp->set_wal_archive_writable(facts.wal_archive_writable);
    resp->set_wal_archive_newest(facts.archive.newest_file);
    resp->set_wal_archive_oldest(facts.archive.oldest_segment);
    resp->set_wal_archive_files(facts.archive.files);
    resp->set_wal_archive_bytes(facts.archive.bytes);
    resp->set_wal_archive_reported(true);
    resp->set_snapshot_method_configured(facts.method.configured);
    resp->set_snapshot_method(facts.method.method);
    resp->set_snapshot_method_reason(facts.method.reason);
    resp->set_snapshot_method_possible(facts.method.possible);
    resp->set_wal_needed_from(facts.wal_needed_from);
    auto age = std::chrono::steady_clock::now() - facts.measured_at;
    resp->set_facts_age_ms(std::chrono::duration_cast<std::chrono::milliseconds>(age).count());
    resp->set_backend_kind(facts.backend.kind);
    resp->set_backend_stanza(facts.backend.stanza);
    resp->set_backend_checked(facts.backend.checked);
    resp->set_backend_check_ok(facts.backend.check_ok);
    resp->set_backend_problem(facts.backend.check_problem);
    if (facts.backend.checked) {
      auto checked_age = std::chrono::system_clock::now() - facts.backend.checked_at;
      resp->set_backend_checked_age_ms(
          std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(checked_age).count()));
    }
    resp->set_backend_summary_json(facts.backend.summary_json);
    resp->set_role(config_.role);
    resp->set_standbys_json(standbys_.CurrentJson());
    resp->set_pg_rewind_available(PathExists(JoinPath(config_.bin_dir, "pg_rewind")));
    resp->set_standby_signal(PathExists(JoinPath(config_.data_directory, "standby.signal")));
    resp->set_stale_libraries_json(facts.stale_libraries_json);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* AgentService::StartJob(grpc::CallbackServerContext* ctx,
                                                 const v1::StartJobRequest* req, v1::JobRef* resp) {
  return Handle(ctx, "StartJob", [&] {
    // The kind comes from the network: one this agent does not run is the caller's error, and
    // nothing runs for it.
    std::optional<JobKind> kind = FromProto(req->kind());
    if (!kind) {
      std::string known;
      for (JobKind k : kAllJobKinds) known += (known.empty() ? "" : ", ") + std::string(JobKindName(k));
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "job kind " + std::to_string(static_cast<int>(req->kind())) +
                              " is not one this agent runs (" + known + ")");
    }
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    for (JobKind standby_kind : kStandbyJobKinds)
      if (*kind == standby_kind) return StartStandbyJob(*kind, req->upgrade_id(), resp);
    // A standby's agent never snapshots, applies or rolls back: its node follows the primary.
    if (config_.IsStandby())
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "this agent serves a standby (agent.role = \"standby\"); the " +
                              std::string(JobKindName(*kind)) + " job runs on the primary's agent");
    const JobSpec& spec = SpecOf(*kind);
    // Existence and state, not just format: a job only ever runs for an upgrade that the catalog
    // says is at that job's step.
    try {
      auto conn = ConnectForAdmission(config_);
      auto state = CatalogState(*conn, req->upgrade_id());
      if (!state) return UnknownUpgrade(req->upgrade_id());
      std::string refusal = RefusalOf(spec, req->upgrade_id(), *state);
      if (!refusal.empty()) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, refusal);
    } catch (const PgError& e) {
      // Transient (the server restarts, refuses logins for a while): the caller retries.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the catalog: " + e.message());
    }
    resp->set_job_id(jobs_.Start(*kind, req->upgrade_id(), RequestedJobBody(spec)));
    return grpc::Status::OK;
  });
}

// A standby job starts only on a standby's agent, and only while the standby's own catalog (its
// replica of the primary's) says the upgrade may have touched production: holding a client
// certificate is not enough to stop and rewind a standby.
grpc::Status AgentService::StartStandbyJob(JobKind kind, int64_t upgrade_id, v1::JobRef* resp) {
  if (!config_.IsStandby())
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this agent serves a primary; the " + std::string(JobKindName(kind)) +
                            " job runs only on a standby's agent (agent.role = \"standby\")");
  try {
    auto conn = ConnectForAdmission(config_);
    auto state = CatalogState(*conn, upgrade_id);
    if (!state) return UnknownUpgrade(upgrade_id);
    auto parsed = ParseState(*state);
    if (!parsed || !ProductionMayBeTouched(*parsed))
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "upgrade " + std::to_string(upgrade_id) + " is " + *state +
                              " in this standby's catalog; a standby is re-synced only after the primary was "
                              "rolled back (the upgrade applying, verifying or rolling back here)");
  } catch (const PgError& e) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the standby's catalog: " + e.message());
  }
  resp->set_job_id(jobs_.Start(kind, upgrade_id, RunResyncStandbyJob));
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* AgentService::GetJob(grpc::CallbackServerContext* ctx, const v1::JobRef* req,
                                               v1::Job* resp) {
  return Handle(ctx, "GetJob", [&] {
    JobKind kind;
    int64_t upgrade_id = 0;
    if (!ParseJobId(req->job_id(), kind, upgrade_id))
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "malformed job id; expected <kind>-<upgrade id>");
    auto job = jobs_.Get(req->job_id(), req->event_cursor());
    if (!job)
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "no job " + req->job_id() + " since the agent started");
    resp->set_job_id(job->id);
    resp->set_kind(ToProto(job->kind));
    resp->set_failure(ToProto(job->failure));
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

grpc::ServerUnaryReactor* AgentService::CheckStandbyFiles(grpc::CallbackServerContext* ctx,
                                                          const v1::UpgradeRef* req, v1::StandbyFiles* resp) {
  return Handle(ctx, "CheckStandbyFiles", [&] {
    auto valid = ValidateUpgradeId(req->upgrade_id());
    if (!valid.ok()) return valid;
    if (!config_.IsStandby())
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "this agent serves a primary; CheckStandbyFiles is a standby agent's call");
    try {
      auto conn = ConnectForAdmission(config_);
      if (!CatalogState(*conn, req->upgrade_id())) return UnknownUpgrade(req->upgrade_id());
      UpgradeRecord upgrade = LoadUpgrade(*conn, req->upgrade_id());
      ExtensionFilesReport report = CheckExtensionFiles(*conn, upgrade);
      resp->set_upgrade_id(req->upgrade_id());
      resp->set_extname(upgrade.extname);
      resp->set_to_version(upgrade.to_version);
      resp->set_ready(report.problems.empty());
      for (const auto& problem : report.problems) resp->add_problems(ProtoSafeText(problem));
      resp->set_data_directory(config_.data_directory);
      resp->set_share_dir(report.share_dir);
      resp->set_lib_dir(report.lib_dir);
    } catch (const PgError& e) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot read the standby's catalog: " + e.message());
    }
    return grpc::Status::OK;
  });
}

}  // namespace safe_upgrade
