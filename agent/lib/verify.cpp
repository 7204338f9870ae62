// Placeholder; replaced by the real verify job.
#include "jobs.h"

namespace safe_upgrade {
nlohmann::json RunVerifyJob(JobContext&) { throw JobFailure("verify is not implemented yet"); }
}  // namespace safe_upgrade
