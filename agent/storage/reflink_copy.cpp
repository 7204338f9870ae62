// The reflink snapshot's copy of the data directory and its tablespaces. See reflink_copy.h.
//
// The exclusions follow what PostgreSQL 15's base backup (src/backend/backup/basebackup.c)
// leaves out, so that a reflink snapshot starts exactly as a pg_basebackup one does: nothing of a
// running server's transient state (postmaster.pid, statistics temp files, shared memory
// segments, replication slots, temporary files, the relation cache init files) and no WAL (the
// snapshot's WAL comes from the archive, from the backup's start to its stop).
#include "storage/reflink_copy.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>
#include <stdexcept>

#include "base/fs_util.h"
#include "storage/reflink.h"

namespace safe_upgrade {
namespace {

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

[[noreturn]] void Fail(const std::string& what, const std::string& path, int err) {
  throw std::runtime_error(what + " \"" + path + "\": " + strerror(err));
}

struct Entry {
  std::string name;
  struct stat st;
};

// The entries of a directory, lstat'ed; those removed between the listing and the lstat are left
// out (the server drops relations and rotates files while the copy runs).
std::vector<Entry> List(const std::string& dir, ReflinkCopyStats& stats) {
  DIR* d = opendir(dir.c_str());
  if (!d) Fail("could not open directory", dir, errno);
  std::vector<Entry> out;
  while (dirent* de = readdir(d)) {
    std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    Entry e{name, {}};
    if (lstat(JoinPath(dir, name).c_str(), &e.st) != 0) {
      if (errno == ENOENT) {
        ++stats.vanished;
        continue;
      }
      int err = errno;
      closedir(d);
      Fail("could not stat", JoinPath(dir, name), err);
    }
    out.push_back(std::move(e));
  }
  closedir(d);
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

// Database directories hold relation files, where unlogged relations are left out: base/<oid>
// and <tablespace>/<version dir>/<oid>.
bool IsDatabaseDir(const std::string& relative) {
  static const std::regex re("^(base|pg_tblspc_copy)/[0-9]+$");
  return std::regex_match(relative, re);
}

class Copier {
 public:
  explicit Copier(const std::function<void(const ReflinkCopyStats&)>& on_file) : on_file_(on_file) {}

  // relative: the path of from inside the data directory (the rules are written against it);
  // "pg_tblspc_copy/<oid>" inside a tablespace's version directory.
  void CopyDir(const std::string& from, const std::string& to, const std::string& relative, mode_t mode,
               bool with_contents) {
    if (mkdir(to.c_str(), mode & 07777) != 0) Fail("could not create directory", to, errno);
    chmod(to.c_str(), mode & 07777);
    ++stats_.directories;
    if (!with_contents) return;
    std::vector<Entry> entries = List(from, stats_);
    std::set<std::string> unlogged;
    if (IsDatabaseDir(relative)) {
      std::vector<std::string> names;
      for (const auto& e : entries) names.push_back(e.name);
      unlogged = UnloggedFilesToSkip(names);
    }
    for (const auto& e : entries) {
      if (unlogged.count(e.name)) continue;
      std::string child_rel = relative.empty() ? e.name : relative + "/" + e.name;
      std::string src = JoinPath(from, e.name), dst = JoinPath(to, e.name);
      if (relative == "pg_tblspc" && S_ISLNK(e.st.st_mode)) {
        tablespace_links_.push_back(e.name);
        continue;
      }
      CopyRule rule = BackupCopyRule(child_rel, S_ISDIR(e.st.st_mode));
      if (rule == CopyRule::kSkip) continue;
      if (S_ISDIR(e.st.st_mode)) {
        CopyDir(src, dst, child_rel, e.st.st_mode, rule == CopyRule::kCopy);
      } else if (child_rel == "pg_wal" && S_ISLNK(e.st.st_mode)) {
        // A linked WAL directory becomes a plain one, as in pg_basebackup's plain format.
        CopyDir(src, dst, child_rel, 0700, false);
      } else if (S_ISLNK(e.st.st_mode)) {
        CopyLink(src, dst);
      } else if (S_ISREG(e.st.st_mode)) {
        CopyFile(src, dst, e.st.st_mode);
      }
      // Sockets, fifos and devices have no place in a backup.
      if (child_rel == "pg_wal") EnsureArchiveStatus(dst);
    }
  }

  const ReflinkCopyStats& stats() const { return stats_; }
  const std::vector<std::string>& tablespace_links() const { return tablespace_links_; }

 private:
  void CopyFile(const std::string& from, const std::string& to, mode_t mode) {
    struct stat st;
    if (lstat(from.c_str(), &st) != 0) {
      if (errno != ENOENT) Fail("could not stat", from, errno);
      ++stats_.vanished;
      return;
    }
    try {
      CloneFile(from, to, mode & 07777);
    } catch (const std::exception&) {
      // Dropped between the listing and the clone: as pg_basebackup, leave it out.
      if (access(from.c_str(), F_OK) != 0 && errno == ENOENT) {
        unlink(to.c_str());
        ++stats_.vanished;
        return;
      }
      throw;
    }
    ++stats_.files;
    stats_.bytes += static_cast<uint64_t>(st.st_size);
    if (on_file_) on_file_(stats_);
  }

  void CopyLink(const std::string& from, const std::string& to) {
    std::vector<char> buf(4096);
    ssize_t n = readlink(from.c_str(), buf.data(), buf.size() - 1);
    if (n < 0) Fail("could not read link", from, errno);
    if (symlink(std::string(buf.data(), static_cast<size_t>(n)).c_str(), to.c_str()) != 0)
      Fail("could not create link", to, errno);
    ++stats_.links;
  }

  static void EnsureArchiveStatus(const std::string& wal) {
    std::string status = JoinPath(wal, "archive_status");
    if (mkdir(status.c_str(), 0700) != 0 && errno != EEXIST)
      Fail("could not create directory", status, errno);
  }

  const std::function<void(const ReflinkCopyStats&)>& on_file_;
  ReflinkCopyStats stats_;
  std::vector<std::string> tablespace_links_;
};

}  // namespace

CopyRule BackupCopyRule(const std::string& relative_path, bool is_directory) {
  static const std::set<std::string> kTopFiles = {
      "postmaster.pid",       "postmaster.opts",  "backup_label",
      "tablespace_map",       "backup_manifest",  "postgresql.auto.conf.tmp",
      "current_logfiles.tmp", "backup_label.old", "tablespace_map.old"};
  static const std::set<std::string> kContentsLeftOut = {"pg_wal",       "pg_stat_tmp", "pg_replslot",
                                                         "pg_dynshmem",  "pg_notify",   "pg_serial",
                                                         "pg_snapshots", "pg_subtrans"};
  std::string name = BaseName(relative_path);
  bool top = relative_path.find('/') == std::string::npos;
  if (StartsWith(name, "pgsql_tmp")) return CopyRule::kSkip;
  if (!is_directory && StartsWith(name, "pg_internal.init")) return CopyRule::kSkip;
  if (top && !is_directory && kTopFiles.count(name)) return CopyRule::kSkip;
  if (top && kContentsLeftOut.count(name)) return CopyRule::kEmptyDirectory;
  return CopyRule::kCopy;
}

std::set<std::string> UnloggedFilesToSkip(const std::vector<std::string>& names) {
  static const std::regex init_re("^([0-9]+)_init$");
  static const std::regex fork_re("^([0-9]+)(_fsm|_vm|_init)?(\\.[0-9]+)?$");
  std::set<std::string> with_init;
  std::smatch m;
  for (const auto& n : names)
    if (std::regex_match(n, m, init_re)) with_init.insert(m[1]);
  std::set<std::string> skip;
  if (with_init.empty()) return skip;
  for (const auto& n : names)
    if (std::regex_match(n, m, fork_re) && with_init.count(m[1]) && m[2] != "_init") skip.insert(n);
  return skip;
}

ReflinkCopyStats ReflinkCopyDataDirectory(const std::string& data_dir, const std::string& target,
                                          const std::string& tablespaces_target, const ExternalLayout& layout,
                                          const std::function<void(const ReflinkCopyStats&)>& on_file) {
  Copier copier(on_file);
  struct stat st;
  if (stat(data_dir.c_str(), &st) != 0) Fail("could not stat", data_dir, errno);
  copier.CopyDir(data_dir, target, "", st.st_mode, true);
  if (!copier.tablespace_links().empty() && mkdir(tablespaces_target.c_str(), 0700) != 0)
    Fail("could not create directory", tablespaces_target, errno);
  for (const auto& oid : copier.tablespace_links()) {
    const Tablespace* ts = layout.Find(oid);
    if (!ts)
      throw std::runtime_error("tablespace " + oid +
                               " was created while the snapshot was being taken; take the snapshot again");
    std::string version = JoinPath(ts->location, layout.version_dir);
    std::string copy = JoinPath(tablespaces_target, oid);
    if (mkdir(copy.c_str(), 0700) != 0) Fail("could not create directory", copy, errno);
    // Dropped since the layout was read: the copy keeps an empty location, as the WAL replay
    // then drops the tablespace.
    if (stat(version.c_str(), &st) == 0)
      copier.CopyDir(version, JoinPath(copy, layout.version_dir), "pg_tblspc_copy", st.st_mode, true);
    std::string link = JoinPath(target, "pg_tblspc/" + oid);
    if (symlink(copy.c_str(), link.c_str()) != 0) Fail("could not create link", link, errno);
  }
  return copier.stats();
}

}  // namespace safe_upgrade
