// Snapshot and WAL retention: after a successful snapshot the agent keeps at most
// agent.snapshot_retention snapshots, removing the oldest first, but never the snapshot of an
// upgrade that is still in flight (its rollback would need it); then it removes the archived WAL
// that no kept snapshot can replay, so the archive does not grow until the disk fills.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/config.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct SnapshotEntry {
  std::string id;  // "snap-<upgrade id>"
  int64_t upgrade_id = 0;
  std::string created_at;  // from snapshot.json; the directory's mtime for an incomplete one
  bool complete = false;   // has snapshot.json
};

// The snap-<id> directories under snapshot_dir, oldest first.
std::vector<SnapshotEntry> ListSnapshots(const AgentConfig& config);

// Ids of upgrades that are not in a terminal state. Unknown states count as in flight, so a
// state added later is protected until this list learns about it.
std::set<int64_t> InFlightUpgradeIds(PgConn& conn);

struct RetentionOutcome {
  std::vector<std::string> removed;
  std::vector<std::string> kept_in_flight;  // over the limit, but kept because in flight
};

// Removes the oldest snapshots until at most config.snapshot_retention remain, skipping those
// of in-flight upgrades and keep_id. Also clears removals a crash interrupted.
RetentionOutcome ApplySnapshotRetention(const AgentConfig& config, const std::set<int64_t>& in_flight,
                                        const std::string& keep_id);

// The oldest backup start LSN among the complete snapshots the agent keeps: archived WAL before it
// serves no rollback. Nothing when no complete snapshot is kept (then nothing may be pruned).
std::optional<uint64_t> WalNeededFrom(const AgentConfig& config);

}  // namespace safe_upgrade
