// What of a cluster lies outside its data directory, and how copies and rollbacks handle it:
// tablespaces (the links in pg_tblspc) and a pg_wal that is a link to another directory (initdb
// --waldir).
//
// PostgreSQL keeps a tablespace's files in one directory inside its location, <location>/
// PG_15_<catalog version> (the "version directory"), and the location itself always belongs to
// the server's OS user. So everything a rollback or the parked target puts next to production's
// tablespace lives inside the location, in a "slot": <location>/<version dir>.<tag>, a directory
// that holds <version dir> and so is a tablespace location of its own. A data directory whose
// pg_tblspc link points at a slot is complete by itself (a moved-aside data directory keeps
// pointing at its own moved-aside files, never at the restored ones). The WAL directory has no
// such level: its copies and moved-aside versions are siblings, <wal dir>.<tag>, and its parent
// directory must be writable, which the snapshot checks before anything is copied.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace safe_upgrade {

struct Tablespace {
  std::string oid;          // the name of its link in pg_tblspc
  std::string location;     // where that link points: the directory given to CREATE TABLESPACE
  uint64_t size_bytes = 0;  // of the snapshot's copy (0 when read from a live data directory)
};

struct ExternalLayout {
  std::vector<Tablespace> tablespaces;  // by oid
  std::string wal_dir;                  // where pg_wal points; "" when it is a plain directory
  std::string version_dir;              // "PG_15_202209061"
  nlohmann::json ToJson() const;
  // A snapshot taken before layouts were recorded has no tablespaces and a plain pg_wal.
  static ExternalLayout FromJson(const nlohmann::json& j);
  const Tablespace* Find(const std::string& oid) const;
};

// Reads <data_dir>/pg_tblspc and <data_dir>/pg_wal. In-place tablespaces (directories, not links)
// are inside the data directory and are not listed.
ExternalLayout ReadExternalLayout(const std::string& data_dir, const std::string& version_dir);

// Why a rollback could not set this layout aside and restore it ("" when it can): a tablespace
// inside the data directory, a location or the WAL directory's parent the agent cannot write.
std::string LayoutRefusal(const ExternalLayout& layout, const std::string& data_dir);

// pg_basebackup --tablespace-mapping arguments sending each tablespace to <target_root>/<oid>.
std::vector<std::string> TablespaceMappingArgs(const ExternalLayout& layout, const std::string& target_root);

// <location>/<version dir>.<tag>, and <wal dir>.<tag>.
std::string TablespaceSlot(const ExternalLayout& layout, const Tablespace& ts, const std::string& tag);
std::string WalSlot(const std::string& wal_dir, const std::string& tag);

// Replaces <data_dir>/pg_tblspc/<oid> or <data_dir>/pg_wal (when that is a link) with a link to
// target: a new link renamed over the old one.
void PointTablespaceLink(const std::string& data_dir, const std::string& oid, const std::string& target);
void PointWalLink(const std::string& data_dir, const std::string& target);

// Gives a copy of a snapshot's data directory its own tablespaces: every pg_tblspc link is
// pointed at a fresh copy of what it pointed to, made at place(oid). Returns the bytes copied.
uint64_t CopyLinkedTablespaces(const std::string& copy_dir,
                               const std::function<std::string(const std::string&)>& place,
                               bool low_priority);
// The bytes of the tablespaces a data directory's pg_tblspc links point to.
uint64_t LinkedTablespaceBytes(const std::string& data_dir);
// Moves a copy's plain pg_wal directory to wal_dir (copying: another filesystem) and links it.
void MoveWalOut(const std::string& copy_dir, const std::string& wal_dir, bool low_priority);

// Where a copy's bytes will land, for the free-space checks: grouped by filesystem, each with
// reserve_bytes kept free. Returns "" when there is room, else what is short, in words.
struct Placement {
  std::string dir;  // an existing directory on the filesystem that receives the bytes
  uint64_t bytes = 0;
};
std::string RoomRefusal(const std::vector<Placement>& placements, uint64_t reserve_bytes);

// The rollback's handling of production's directories outside the data directory. Every path is
// derived from the layouts and the rollback's suffix, and the plan is journaled with the rollback
// before the first move, so a resumed or interrupted rollback finds each one. Every step checks
// what exists first, so it can run again after a crash.
struct OutsidePlan {
  ExternalLayout production;  // at the precheck: what is moved aside
  ExternalLayout snapshot;    // what is restored
  std::string snapshot_dir;   // <snapshot_dir>/snap-<id>, holding tablespaces/<oid>
  std::string suffix;         // <id>-<time>
  nlohmann::json ToJson() const;
  static OutsidePlan FromJson(const nlohmann::json& j);

  // {from, to} for every directory MoveAside moves, for the journal, events and report.
  nlohmann::json SetAside() const;
  // The names a rollback creates outside the data directory, which must be free beforehand.
  std::vector<std::string> NamesToCreate() const;
  // Tablespaces restored at production's locations: the snapshot's, at the locations it recorded.
  std::vector<Placement> RestorePlacements(uint64_t data_bytes, const std::string& data_parent) const;

  // Production's tablespace version directories and WAL directory into their .failed-<suffix>
  // names; the moved-aside data directory's links follow them.
  void MoveAside(const std::string& aside_data_dir) const;
  // Cold path, inside the restoring copy of the snapshot: each tablespace copied into its
  // .restoring slot and the WAL to <wal dir>.restoring-<suffix>, the copy's links pointed at them.
  void PrepareRestore(const std::string& restoring_dir) const;
  // Renames the copies restoring_dir links to (its .restoring slots, or the parked target's
  // .ready ones) into production's places and points restoring_dir's links there.
  void PutInPlace(const std::string& restoring_dir) const;
  // After a failed recovery: the restored tablespaces and WAL go to .rollback-failed-<suffix>
  // (failed_dir's links follow them), production's come back, aside_data_dir's links point at
  // them again, and restore scratch is removed. Returns the paths set aside.
  std::vector<std::string> PutOriginalBack(const std::string& aside_data_dir,
                                           const std::string& failed_dir) const;
};

// The parked target's copies next to production's: each tablespace in its .ready-<id> slot and
// the WAL in <wal dir>.ready-<id>. Made at preparation, removed by DiscardTargetOutside unless
// swapped in (a slot still holding files was never swapped in).
void CopyOutsideForTarget(const ExternalLayout& layout, const std::string& target_dir, int64_t upgrade_id);
void DiscardTargetOutside(const ExternalLayout& layout, int64_t upgrade_id);

}  // namespace safe_upgrade
