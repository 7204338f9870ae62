// Tablespaces and a linked pg_wal: reading the layout, slots, links, copies and the rollback's
// moves. See tablespaces.h for the naming.
#include "postgres/tablespaces.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "base/copy_progress.h"
#include "base/fs_util.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {

using nlohmann::json;

std::string Normal(const std::string& p) { return fs::path(p).lexically_normal().string(); }

bool InsideOrSame(const std::string& path, const std::string& dir) {
  std::string p = Normal(path), d = Normal(dir);
  if (p == d) return true;
  if (!d.empty() && d.back() != '/') d += '/';
  return p.compare(0, d.size(), d) == 0;
}

bool IsLink(const std::string& path) {
  std::error_code ec;
  return fs::is_symlink(fs::symlink_status(path, ec));
}

void ReplaceLink(const std::string& link, const std::string& target) {
  std::string tmp = link + ".su-new";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_directory_symlink(target, tmp);
  DurableRename(tmp, link);
}

// Renames from to to when from exists and to does not; both existing is a state nobody should
// guess about. Returns whether it moved.
bool MoveIfThere(const std::string& from, const std::string& to) {
  if (!PathExists(from)) return false;
  if (PathExists(to))
    throw std::runtime_error("both " + from + " and " + to + " exist; refusing to guess which is which");
  DurableRename(from, to);
  return true;
}

std::string VersionIn(const ExternalLayout& layout, const Tablespace& ts) {
  return JoinPath(ts.location, layout.version_dir);
}

// <slot>/<version dir> -> <location>/<version dir>, then the empty slot goes.
bool MoveOutOfSlot(const ExternalLayout& layout, const Tablespace& ts, const std::string& slot) {
  bool moved = MoveIfThere(JoinPath(slot, layout.version_dir), VersionIn(layout, ts));
  if (IsDirectory(slot) && fs::is_empty(slot)) {
    fs::remove(slot);
    FsyncPath(ts.location);
  }
  return moved;
}

bool MoveIntoSlot(const ExternalLayout& layout, const Tablespace& ts, const std::string& slot) {
  if (!PathExists(VersionIn(layout, ts))) return false;
  EnsureDir(slot, 0700);
  return MoveIfThere(VersionIn(layout, ts), JoinPath(slot, layout.version_dir));
}

// Every tablespace that production or the snapshot has, once, production's location first.
std::vector<Tablespace> Union(const ExternalLayout& a, const ExternalLayout& b) {
  std::vector<Tablespace> out = a.tablespaces;
  for (const auto& ts : b.tablespaces)
    if (!a.Find(ts.oid)) out.push_back(ts);
  return out;
}

void RemoveIfThere(const std::string& path) {
  if (PathExists(path)) RemoveTree(path);
}

}  // namespace

json ExternalLayout::ToJson() const {
  json list = json::array();
  for (const auto& ts : tablespaces)
    list.push_back({{"oid", ts.oid}, {"location", ts.location}, {"size_bytes", ts.size_bytes}});
  return {{"tablespaces", list}, {"wal_dir", wal_dir}, {"version_dir", version_dir}};
}

ExternalLayout ExternalLayout::FromJson(const json& j) {
  ExternalLayout out;
  if (!j.is_object()) return out;
  for (const auto& ts : j.value("tablespaces", json::array()))
    out.tablespaces.push_back(
        {ts.value("oid", ""), ts.value("location", ""), ts.value("size_bytes", uint64_t{0})});
  out.wal_dir = j.value("wal_dir", "");
  out.version_dir = j.value("version_dir", "");
  return out;
}

const Tablespace* ExternalLayout::Find(const std::string& oid) const {
  for (const auto& ts : tablespaces)
    if (ts.oid == oid) return &ts;
  return nullptr;
}

ExternalLayout ReadExternalLayout(const std::string& data_dir, const std::string& version_dir) {
  ExternalLayout out;
  out.version_dir = version_dir;
  std::string tblspc = JoinPath(data_dir, "pg_tblspc");
  if (IsDirectory(tblspc))
    for (const auto& e : fs::directory_iterator(tblspc))
      if (IsLink(e.path().string()))
        out.tablespaces.push_back({e.path().filename().string(), fs::read_symlink(e.path()).string(), 0});
  std::sort(out.tablespaces.begin(), out.tablespaces.end(),
            [](const Tablespace& a, const Tablespace& b) { return a.oid < b.oid; });
  std::string wal = JoinPath(data_dir, "pg_wal");
  if (IsLink(wal)) out.wal_dir = fs::read_symlink(wal).string();
  return out;
}

std::string LayoutRefusal(const ExternalLayout& layout, const std::string& data_dir) {
  for (const auto& ts : layout.tablespaces) {
    std::string where = "tablespace " + ts.oid + " (" + ts.location + ")";
    if (ts.location.empty() || ts.location[0] != '/')
      return where + " is not at an absolute path; a rollback cannot set it aside";
    if (InsideOrSame(ts.location, data_dir) || InsideOrSame(data_dir, ts.location))
      return where + " lies inside the data directory " + data_dir +
             "; a rollback could not set it aside apart from the data directory";
    if (access(ts.location.c_str(), W_OK | X_OK) != 0)
      return where + " is not writable by the agent's OS user; a rollback sets its files aside inside it";
  }
  if (!layout.wal_dir.empty()) {
    std::string parent = Dirname(layout.wal_dir);
    if (layout.wal_dir[0] != '/') return "pg_wal links to a relative path (" + layout.wal_dir + ")";
    if (InsideOrSame(layout.wal_dir, data_dir))
      return "pg_wal links to " + layout.wal_dir + ", inside the data directory " + data_dir;
    if (access(parent.c_str(), W_OK | X_OK) != 0)
      return "pg_wal links to " + layout.wal_dir + ", and " + parent +
             " is not writable by the agent's OS user; a rollback sets the WAL directory aside there";
  }
  return "";
}

std::vector<std::string> TablespaceMappingArgs(const ExternalLayout& layout, const std::string& target_root) {
  // pg_basebackup splits OLD=NEW at the first unescaped '='.
  auto escape = [](const std::string& s) {
    std::string out;
    for (char ch : s) out += ch == '=' ? std::string("\\=") : std::string(1, ch);
    return out;
  };
  std::vector<std::string> out;
  for (const auto& ts : layout.tablespaces)
    out.push_back("--tablespace-mapping=" + escape(ts.location) + "=" +
                  escape(JoinPath(target_root, ts.oid)));
  return out;
}

std::string TablespaceSlot(const ExternalLayout& layout, const Tablespace& ts, const std::string& tag) {
  return JoinPath(ts.location, layout.version_dir + "." + tag);
}

std::string WalSlot(const std::string& wal_dir, const std::string& tag) { return wal_dir + "." + tag; }

void PointTablespaceLink(const std::string& data_dir, const std::string& oid, const std::string& target) {
  std::string link = JoinPath(data_dir, "pg_tblspc/" + oid);
  if (IsLink(link) && fs::read_symlink(link).string() == target) return;
  ReplaceLink(link, target);
}

void PointWalLink(const std::string& data_dir, const std::string& target) {
  std::string link = JoinPath(data_dir, "pg_wal");
  if (IsLink(link) && fs::read_symlink(link).string() == target) return;
  ReplaceLink(link, target);
}

uint64_t CopyLinkedTablespaces(const std::string& copy_dir,
                               const std::function<std::string(const std::string&)>& place,
                               bool low_priority) {
  uint64_t bytes = 0;
  for (const auto& ts : ReadExternalLayout(copy_dir, "").tablespaces) {
    std::string to = place(ts.oid);
    RemoveIfThere(to);
    EnsureDir(Dirname(to), 0700);
    CopyTree(ts.location, to, low_priority);
    bytes += TreeSize(to);
    PointTablespaceLink(copy_dir, ts.oid, to);
  }
  return bytes;
}

uint64_t LinkedTablespaceBytes(const std::string& data_dir) {
  uint64_t bytes = 0;
  for (const auto& ts : ReadExternalLayout(data_dir, "").tablespaces) bytes += TreeSize(ts.location);
  return bytes;
}

void MoveWalOut(const std::string& copy_dir, const std::string& wal_dir, bool low_priority) {
  std::string wal = JoinPath(copy_dir, "pg_wal");
  RemoveIfThere(wal_dir);
  if (IsLink(wal)) {
    CopyTree(fs::read_symlink(wal).string(), wal_dir, low_priority);
  } else {
    CopyTree(wal, wal_dir, low_priority);
    RemoveTree(wal);
  }
  PointWalLink(copy_dir, wal_dir);
}

std::string RoomRefusal(const std::vector<Placement>& placements, uint64_t reserve_bytes) {
  struct Need {
    std::string dir;
    uint64_t bytes = 0;
  };
  std::map<dev_t, Need> by_fs;
  for (const auto& p : placements) {
    struct stat st;
    if (stat(p.dir.c_str(), &st) != 0) return "cannot reach " + p.dir;
    Need& n = by_fs[st.st_dev];
    if (n.dir.empty()) n.dir = p.dir;
    n.bytes += p.bytes;
  }
  for (const auto& [dev, n] : by_fs) {
    uint64_t free_bytes = FreeBytes(n.dir);
    if (free_bytes < n.bytes + reserve_bytes)
      return "the filesystem of " + n.dir + " needs " + Megabytes(n.bytes) + " plus the reserve of " +
             Megabytes(reserve_bytes) + ", and " + Megabytes(free_bytes) + " are free";
  }
  return "";
}

json OutsidePlan::ToJson() const {
  return {{"production", production.ToJson()},
          {"snapshot", snapshot.ToJson()},
          {"snapshot_dir", snapshot_dir},
          {"suffix", suffix}};
}

OutsidePlan OutsidePlan::FromJson(const json& j) {
  OutsidePlan p;
  if (!j.is_object()) return p;
  p.production = ExternalLayout::FromJson(j.value("production", json::object()));
  p.snapshot = ExternalLayout::FromJson(j.value("snapshot", json::object()));
  p.snapshot_dir = j.value("snapshot_dir", "");
  p.suffix = j.value("suffix", "");
  return p;
}

json OutsidePlan::SetAside() const {
  json out = json::array();
  for (const auto& ts : Union(production, snapshot))
    out.push_back(
        {{"from", VersionIn(production, ts)},
         {"to", JoinPath(TablespaceSlot(production, ts, "failed-" + suffix), production.version_dir)}});
  if (!production.wal_dir.empty())
    out.push_back({{"from", production.wal_dir}, {"to", WalSlot(production.wal_dir, "failed-" + suffix)}});
  return out;
}

std::vector<std::string> OutsidePlan::NamesToCreate() const {
  std::vector<std::string> out;
  for (const char* kind : {"failed-", "restoring-", "rollback-failed-"}) {
    for (const auto& ts : Union(production, snapshot))
      out.push_back(TablespaceSlot(production, ts, kind + suffix));
    if (!production.wal_dir.empty()) out.push_back(WalSlot(production.wal_dir, kind + suffix));
  }
  return out;
}

std::vector<Placement> OutsidePlan::RestorePlacements(uint64_t data_bytes,
                                                      const std::string& data_parent) const {
  std::vector<Placement> out = {{data_parent, data_bytes}};
  for (const auto& ts : snapshot.tablespaces)
    out.push_back({IsDirectory(ts.location) ? ts.location : Dirname(ts.location), ts.size_bytes});
  return out;
}

void OutsidePlan::MoveAside(const std::string& aside_data_dir) const {
  for (const auto& ts : Union(production, snapshot)) {
    std::string slot = TablespaceSlot(production, ts, "failed-" + suffix);
    MoveIntoSlot(production, ts, slot);
    if (PathExists(JoinPath(slot, production.version_dir)) &&
        IsLink(JoinPath(aside_data_dir, "pg_tblspc/" + ts.oid)))
      PointTablespaceLink(aside_data_dir, ts.oid, slot);
  }
  if (production.wal_dir.empty()) return;
  std::string slot = WalSlot(production.wal_dir, "failed-" + suffix);
  MoveIfThere(production.wal_dir, slot);
  if (PathExists(slot) && IsLink(JoinPath(aside_data_dir, "pg_wal"))) PointWalLink(aside_data_dir, slot);
}

void OutsidePlan::PrepareRestore(const std::string& restoring_dir) const {
  for (const auto& ts : snapshot.tablespaces) {
    // Renamed into place before a crash: complete (it was synced first) and ours.
    if (PathExists(VersionIn(snapshot, ts))) {
      PointTablespaceLink(restoring_dir, ts.oid, ts.location);
      continue;
    }
    std::string slot = TablespaceSlot(snapshot, ts, "restoring-" + suffix);
    RemoveIfThere(slot);
    EnsureDir(ts.location, 0700);
    CopyTree(JoinPath(snapshot_dir, "tablespaces/" + ts.oid), slot);
    PointTablespaceLink(restoring_dir, ts.oid, slot);
  }
  if (production.wal_dir.empty()) return;
  if (PathExists(production.wal_dir)) {
    RemoveTree(JoinPath(restoring_dir, "pg_wal"));
    PointWalLink(restoring_dir, production.wal_dir);
    return;
  }
  MoveWalOut(restoring_dir, WalSlot(production.wal_dir, "restoring-" + suffix), false);
}

void OutsidePlan::PutInPlace(const std::string& restoring_dir) const {
  // The copy's links say where its copies are: the .restoring or .ready slots, or production's
  // places already when they were renamed there before a crash.
  for (const auto& link : ReadExternalLayout(restoring_dir, "").tablespaces) {
    const Tablespace* ts = snapshot.Find(link.oid);
    if (!ts) throw std::runtime_error("tablespace " + link.oid + " is not in the snapshot's recorded layout");
    if (link.location != ts->location) MoveOutOfSlot(snapshot, *ts, link.location);
    PointTablespaceLink(restoring_dir, ts->oid, ts->location);
  }
  if (production.wal_dir.empty()) return;
  std::string wal = JoinPath(restoring_dir, "pg_wal");
  if (IsLink(wal)) {
    std::string copy = fs::read_symlink(wal).string();
    if (copy != production.wal_dir) MoveIfThere(copy, production.wal_dir);
  } else if (!PathExists(production.wal_dir)) {
    // A snapshot of a cluster whose pg_wal was not a link then.
    MoveWalOut(restoring_dir, production.wal_dir, false);
  } else {
    RemoveTree(wal);  // the WAL directory in place is this rollback's copy, renamed before a crash
  }
  PointWalLink(restoring_dir, production.wal_dir);
}

std::vector<std::string> OutsidePlan::PutOriginalBack(const std::string& aside_data_dir,
                                                      const std::string& failed_dir) const {
  std::vector<std::string> failed;
  for (const auto& ts : Union(production, snapshot)) {
    std::string aside = TablespaceSlot(production, ts, "failed-" + suffix);
    bool ours = PathExists(JoinPath(aside, production.version_dir)) || !production.Find(ts.oid);
    if (ours && PathExists(VersionIn(production, ts))) {
      std::string slot = TablespaceSlot(production, ts, "rollback-failed-" + suffix);
      MoveIntoSlot(production, ts, slot);
      if (IsLink(JoinPath(failed_dir, "pg_tblspc/" + ts.oid))) PointTablespaceLink(failed_dir, ts.oid, slot);
      failed.push_back(slot);
    }
    MoveOutOfSlot(production, ts, aside);
    if (IsLink(JoinPath(aside_data_dir, "pg_tblspc/" + ts.oid)))
      PointTablespaceLink(aside_data_dir, ts.oid, ts.location);
    RemoveIfThere(TablespaceSlot(production, ts, "restoring-" + suffix));
  }
  if (production.wal_dir.empty()) return failed;
  std::string aside = WalSlot(production.wal_dir, "failed-" + suffix);
  if (PathExists(aside) && PathExists(production.wal_dir)) {
    std::string slot = WalSlot(production.wal_dir, "rollback-failed-" + suffix);
    MoveIfThere(production.wal_dir, slot);
    if (IsLink(JoinPath(failed_dir, "pg_wal"))) PointWalLink(failed_dir, slot);
    failed.push_back(slot);
  }
  MoveIfThere(aside, production.wal_dir);
  if (IsLink(JoinPath(aside_data_dir, "pg_wal"))) PointWalLink(aside_data_dir, production.wal_dir);
  RemoveIfThere(WalSlot(production.wal_dir, "restoring-" + suffix));
  return failed;
}

void CopyOutsideForTarget(const ExternalLayout& layout, const std::string& target_dir, int64_t upgrade_id) {
  std::string tag = "ready-" + std::to_string(upgrade_id);
  CopyLinkedTablespaces(
      target_dir,
      [&](const std::string& oid) {
        const Tablespace* ts = layout.Find(oid);
        if (!ts)
          throw std::runtime_error("the snapshot's tablespace " + oid + " is not in its recorded layout");
        return TablespaceSlot(layout, *ts, tag);
      },
      true);
  if (!layout.wal_dir.empty()) MoveWalOut(target_dir, WalSlot(layout.wal_dir, tag), true);
}

void DiscardTargetOutside(const ExternalLayout& layout, int64_t upgrade_id) {
  std::string tag = "ready-" + std::to_string(upgrade_id);
  for (const auto& ts : layout.tablespaces) RemoveIfThere(TablespaceSlot(layout, ts, tag));
  if (!layout.wal_dir.empty()) RemoveIfThere(WalSlot(layout.wal_dir, tag));
}

}  // namespace safe_upgrade
