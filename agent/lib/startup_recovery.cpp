// Placeholder; replaced by the real startup recovery (orphaned clones, interrupted rollbacks).
#include "jobs.h"

namespace safe_upgrade {
void RecoverOnStartup(JobManager&, Journal&, const AgentConfig&) {}
}  // namespace safe_upgrade
