// The proof, made before production is touched, that a rollback to an upgrade's restore point can
// work: the snapshot and the restore point are on one timeline, and every WAL segment from the
// snapshot's start to the restore point is in the archive the rollback reads, readable and of this
// cluster. An archive_command that reports success without archiving (/bin/true) fails here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "base/config.h"
#include "postgres/catalog.h"

namespace safe_upgrade {

// Returns {"segments": n, "from": first segment, "to": last segment}; throws JobFailure (with
// {"refused": true}) naming what is missing.
nlohmann::json ProveRollbackWal(const AgentConfig& config, int64_t upgrade_id,
                                const RestorePointRecord& restore_point);

}  // namespace safe_upgrade
