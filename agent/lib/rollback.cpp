// Placeholder; replaced by the real rollback job.
#include "jobs.h"

namespace safe_upgrade {
nlohmann::json RunRollbackJob(JobContext&) { throw JobFailure("rollback is not implemented yet"); }
}  // namespace safe_upgrade
