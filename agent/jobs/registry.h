// The registry of the agent's jobs: per JobKind, the body that runs it and the catalog state its
// upgrade must be in for it to start. The one place a kind of job is spelled in the agent; to add
// a job, add its JobKind (core/job_kinds.h and the proto's JobKind), its body (jobs.h) and a row here.
#pragma once

#include <cstdint>
#include <string>

#include "base/config.h"
#include "base/job.h"
#include "base/journal.h"
#include "core/job_kinds.h"

namespace safe_upgrade {

struct JobSpec {
  // A job starts only while its upgrade is in the one catalog state that runs it
  // (StateForJob(kind), the state table's job-following state). Holding a client certificate is
  // not enough to snapshot, apply or roll back production: the catalog, which only the
  // extension's SQL functions and its worker change, must say that this step is due.
  JobKind kind;
  nlohmann::json (*body)(JobContext&);
  // How that state is reached, for the refusal; {id} is the upgrade id.
  const char* how;
};

// The row of kind; every JobKind has one (a unit test checks it).
const JobSpec& SpecOf(JobKind kind);

// Why a job of kind cannot start for upgrade_id, whose catalog state is state ("" when it can):
// "upgrade 7 is succeeded, not rolling_back; a rollback starts only through ...".
std::string RefusalOf(const JobSpec& spec, int64_t upgrade_id, const std::string& state);

// The body a job started on request runs: first, on the job's own thread, it gives back the disk
// of rollback targets that no upgrade can roll back through any more (another job may no longer
// be using its own, since one runs at a time), then the kind's body.
JobBody RequestedJobBody(const JobSpec& spec);

}  // namespace safe_upgrade
