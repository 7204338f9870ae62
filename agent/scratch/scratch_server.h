// Scratch servers (dry-run clones, the parked rollback target): finding the postmaster that runs
// on a scratch data directory, and stopping it for good.
#pragma once

#include <cstdint>
#include <string>

namespace safe_upgrade {

// The postmaster running on data_dir, or 0. Its pid must be a postgres started on that
// directory, so that a stale postmaster.pid never makes us signal an unrelated process.
long ScratchPostmaster(const std::string& data_dir);
// Stops a scratch server immediately (SIGKILL if pg_ctl cannot), and waits until it is gone.
void StopScratchServer(int64_t upgrade_id, const std::string& bin_dir, const std::string& data_dir);

}  // namespace safe_upgrade
