// Filesystem helpers with the durability the agent's journal and archive need.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace safe_upgrade {

std::string ReadFile(const std::string& path);
// The file's contents, or "" when it cannot be read (logs that may not exist yet).
std::string ReadFileOr(const std::string& path);
// The last max_bytes of a file (prefixed with "..." when cut), trailing blank space removed; for
// quoting a server log in an error message.
std::string FileTail(const std::string& path, size_t max_bytes);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
// Creates the directory (and parents) if missing, then sets its mode.
void EnsureDir(const std::string& path, mode_t mode = 0700);
// Writes to "<path>.tmp", fsyncs it, renames it over path and fsyncs the directory.
void AtomicWriteFile(const std::string& path, const std::string& content, mode_t mode = 0600);
void FsyncPath(const std::string& path);
void FsyncParentDir(const std::string& path);
// Renames and fsyncs both parent directories.
void DurableRename(const std::string& from, const std::string& to);
// Copies a directory tree with cp -a (reflinks where the filesystem allows).
// low_priority: for copies made while production serves (clones, the rollback target).
void CopyTree(const std::string& from, const std::string& to, bool low_priority = false);
struct SyncStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  double seconds = 0;
};
// Flushes every file and directory of a tree to disk (fsync each, directories after their
// contents), following symbolic links (pg_wal, tablespaces). A copy made with cp sits in the page
// cache until then; a data directory is not relied on before this returned. Throws naming the
// first path that cannot be opened or synced.
SyncStats SyncTree(const std::string& path);
// Removes a directory tree. Only for our own scratch copies, never for a data directory.
void RemoveTree(const std::string& path);
uint64_t TreeSize(const std::string& path);
uint64_t FreeBytes(const std::string& path);
std::string Dirname(const std::string& path);
std::string JoinPath(const std::string& a, const std::string& b);
// Gives the tree to the OS user (when we are root and the user exists).
void ChownTree(const std::string& path, const std::string& user);
std::string NowIso8601();
// The same to the second without separators (20261201T210402Z): part of the names of the
// directories set aside, so that they never collide with those of an earlier cluster.
std::string CompactUtcStamp();

}  // namespace safe_upgrade
