// Filesystem helpers implementation.
#include "base/fs_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "base/process.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {
[[noreturn]] void ThrowErrno(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " \"" + path + "\": " + strerror(errno));
}
}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowErrno("could not read file", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ReadFileOr(const std::string& path) {
  try {
    return ReadFile(path);
  } catch (...) {
    return "";
  }
}

std::string FileTail(const std::string& path, size_t max_bytes) {
  std::string text = ReadFileOr(path);
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void EnsureDir(const std::string& path, mode_t mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw std::runtime_error("could not create directory \"" + path + "\": " + ec.message());
  if (chmod(path.c_str(), mode) != 0) ThrowErrno("could not set mode of directory", path);
}

void FsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) ThrowErrno("could not open", path);
  if (fsync(fd) != 0) {
    close(fd);
    ThrowErrno("could not fsync", path);
  }
  close(fd);
}

std::string Dirname(const std::string& path) {
  auto p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}

std::string JoinPath(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }

void FsyncParentDir(const std::string& path) { FsyncPath(Dirname(path)); }

void AtomicWriteFile(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) ThrowErrno("could not create file", tmp);
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      close(fd);
      ThrowErrno("could not write file", tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    close(fd);
    ThrowErrno("could not fsync file", tmp);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) ThrowErrno("could not rename file to", path);
  FsyncParentDir(path);
}

void DurableRename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0)
    throw std::runtime_error("could not rename \"" + from + "\" to \"" + to + "\": " + strerror(errno));
  FsyncParentDir(to);
  if (Dirname(from) != Dirname(to)) FsyncParentDir(from);
}

void CopyTree(const std::string& from, const std::string& to, bool low_priority) {
  ProcessOptions options;
  options.low_priority = low_priority;
  RunChecked({"cp", "-a", "--reflink=auto", from, to}, options);
}

namespace {
void SyncEntry(const std::string& path, bool directory, SyncStats& stats) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) ThrowErrno("could not open for fsync", path);
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    ThrowErrno("could not fsync", path);
  }
  close(fd);
  ++(directory ? stats.directories : stats.files);
}

void SyncDirectory(const std::string& dir, SyncStats& stats) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw std::runtime_error("could not list \"" + dir + "\" for fsync: " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) throw std::runtime_error("could not list \"" + dir + "\" for fsync: " + ec.message());
    std::string path = it->path().string();
    std::error_code se;
    // status() follows links: a dangling one is an error, not something to skip.
    auto st = fs::status(path, se);
    if (se) throw std::runtime_error("could not stat \"" + path + "\" for fsync: " + se.message());
    if (fs::is_directory(st))
      SyncDirectory(path, stats);
    else if (fs::is_regular_file(st))
      SyncEntry(path, false, stats);
  }
  // The directory after its entries, so that the names it holds are durable too.
  SyncEntry(dir, true, stats);
}
}  // namespace

SyncStats SyncTree(const std::string& path) {
  auto started = std::chrono::steady_clock::now();
  SyncStats stats;
  SyncDirectory(path, stats);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) throw std::runtime_error("could not remove \"" + path + "\": " + ec.message());
}

uint64_t TreeSize(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code fe;
    if (it->is_regular_file(fe)) total += it->file_size(fe);
  }
  return total;
}

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) ThrowErrno("could not stat filesystem of", path);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

void ChownTree(const std::string& path, const std::string& user) {
  if (user.empty() || geteuid() != 0) return;
  auto ids = LookupUser(user);
  if (!ids) throw std::runtime_error("unknown OS user \"" + user + "\"");
  RunChecked({"chown", "-R", std::to_string(ids->uid) + ":" + std::to_string(ids->gid), path});
}

std::string NowIso8601() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[80];
  snprintf(out, sizeof out, "%s.%03ldZ", buf, ts.tv_nsec / 1000000);
  return out;
}

std::string CompactUtcStamp() {
  std::string iso = NowIso8601();  // 2026-12-01T21:04:02.123Z
  std::string out;
  for (char ch : iso.substr(0, iso.find('.')))
    if (ch != '-' && ch != ':') out += ch;
  return out + "Z";
}

}  // namespace safe_upgrade
