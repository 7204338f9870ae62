// Point-in-time rollback of production to an upgrade's restore point, journaled step by step so
// that a restarted agent resumes where it stopped. See docs/rollback.md.
#pragma once

#include <string>
#include <vector>

namespace safe_upgrade {

// The journaled steps, in order. A step is recorded after it is complete.
const std::vector<std::string>& RollbackSteps();

}  // namespace safe_upgrade
