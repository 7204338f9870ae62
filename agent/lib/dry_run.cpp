// Placeholder; replaced by the real dry_run job.
#include "jobs.h"

namespace safe_upgrade {
nlohmann::json RunDryRunJob(JobContext&) { throw JobFailure("dry_run is not implemented yet"); }
}  // namespace safe_upgrade
