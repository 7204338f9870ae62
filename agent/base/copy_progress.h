// Copying a data directory inside a job, with progress: the job's progress fraction moves while
// the copy runs, and an event every few seconds says how far it got. Used by dry-run clones and
// by the parked rollback target.
#pragma once

#include <cstdint>
#include <string>

#include "base/job.h"

namespace safe_upgrade {

// Copies from -> to (cp -a, reflinks where possible). total is the expected size in bytes.
// The job's progress goes from progress_from to progress_to. Returns the copy's duration in s.
double CopyTreeReporting(JobContext& ctx, const std::string& phase, const std::string& from,
                         const std::string& to, uint64_t total, double progress_from, double progress_to);

// "123 MB"
std::string Megabytes(uint64_t bytes);

}  // namespace safe_upgrade
