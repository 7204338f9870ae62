// Milliseconds since a point on the monotonic clock: the durations that jobs and checks report.
#pragma once

#include <chrono>
#include <cstdint>

namespace safe_upgrade {

inline int64_t MsSince(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since)
      .count();
}

}  // namespace safe_upgrade
