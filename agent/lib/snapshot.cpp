// Placeholder; replaced by the real snapshot job.
#include "jobs.h"

namespace safe_upgrade {
nlohmann::json RunSnapshotJob(JobContext&) { throw JobFailure("snapshot is not implemented yet"); }
}  // namespace safe_upgrade
