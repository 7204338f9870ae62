// Copy-on-write copies (reflinks, the FICLONE ioctl) and the choice of snapshot method: whether
// this cluster's snapshots can be taken as reflink copies of its files (agent.snapshot_method).
//
// A reflink copy shares the source's extents until either side writes, so its time and disk do
// not grow with the size of the files. It needs one filesystem that can clone extents (XFS with
// reflink=1, btrfs) under everything the snapshot reads and writes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/config.h"
#include "postgres/tablespaces.h"

namespace safe_upgrade {

// Clones the whole of the regular file from into the new file to (created with mode; it must not
// exist). Throws std::runtime_error naming both files and the system's reason.
void CloneFile(const std::string& from, const std::string& to, mode_t mode);
// CloneFile where the filesystem allows it, else a byte copy; both are fsynced by the caller.
// For small files (WAL segments from the archive, which may live on another filesystem).
void CloneOrCopyFile(const std::string& from, const std::string& to, mode_t mode);

// One directory that a reflink snapshot reads or writes, and the filesystem it lies on.
struct ProbedPath {
  std::string role;  // "the data directory", "agent.snapshot_dir", "tablespace 16384", ...
  std::string path;
  dev_t device = 0;
};
// Why these directories cannot share extents ("" when they are all on one filesystem): names the
// first that lies on another filesystem than the first one.
std::string SameFilesystemRefusal(const std::vector<ProbedPath>& paths);

// The method a snapshot will use, and why.
struct SnapshotMethodChoice {
  std::string configured;  // "auto", "reflink" or "basebackup"
  std::string method;      // "reflink" or "basebackup"
  std::string reason;      // in words
  bool possible = true;    // false: "reflink" was asked for and cannot be had
  nlohmann::json ToJson() const;
};
// Pure: the choice from the configured method and the probe's refusal ("" when reflink works).
SnapshotMethodChoice ResolveSnapshotMethod(const std::string& configured, const std::string& refusal);
// Why reflink snapshots are impossible for this cluster ("" when possible): clones a file of the
// data directory (PG_VERSION, read only) into snapshot_dir, and checks that the data directory,
// snapshot_dir, work_dir, each tablespace and a linked pg_wal are on that one filesystem.
std::string ReflinkRefusal(const AgentConfig& config);
// ResolveSnapshotMethod over the probe (the probe only runs when it can change the answer).
SnapshotMethodChoice ChooseSnapshotMethod(const AgentConfig& config);

// Whether a copy from from_dir into to_dir shares extents (cp --reflink=auto then takes no data
// blocks): one filesystem, and a probe file clones inside to_dir (or its nearest existing parent).
bool CopiesShareExtents(const std::string& from_dir, const std::string& to_dir);

// Copies from source_dir that land in a placement sharing its extents take no data blocks: their
// bytes are not counted against that placement's free space (the parked target's and the cold
// restore's checks).
void DiscountSharedExtents(const std::string& source_dir, std::vector<Placement>& placements);

// The extra disk a snapshot of cluster_bytes needs in snapshot_dir, by method. basebackup: a full
// copy. reflink: the WAL copied from the archive (a few segments: the copy takes seconds) and the
// filesystem's metadata for the shared extents, 1/200 of the cluster at most. Blocks shared with
// production become the snapshot's own only as production overwrites them later.
uint64_t SnapshotExtraBytes(const std::string& method, uint64_t cluster_bytes, uint64_t wal_segment_bytes);

}  // namespace safe_upgrade
