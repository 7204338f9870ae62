// Placeholder; replaced by the real apply job.
#include "jobs.h"

namespace safe_upgrade {
nlohmann::json RunApplyJob(JobContext&) { throw JobFailure("apply is not implemented yet"); }
}  // namespace safe_upgrade
