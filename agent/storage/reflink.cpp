// FICLONE, the reflink probe and the choice of snapshot method. See reflink.h.
#include "storage/reflink.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/fs_util.h"
#include "postgres/tablespaces.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {

constexpr const char* kProbeName = ".su-reflink-probe";

// A name of its own for each probe file: pings and jobs probe from several threads at once.
std::string ProbePath(const std::string& dir, const char* kind) {
  static std::atomic<uint64_t> counter{0};
  return JoinPath(dir, std::string(kProbeName) + kind + "-" + std::to_string(getpid()) + "-" +
                           std::to_string(counter.fetch_add(1)));
}

class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() {
    if (fd_ >= 0) close(fd_);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Reason(int err) { return strerror(err); }

// The nearest existing directory at or above path: a directory the agent creates later lands on
// that one's filesystem.
std::string NearestExisting(std::string path) {
  while (!path.empty() && path != "/" && !IsDirectory(path)) path = Dirname(path);
  return path.empty() ? "/" : path;
}

dev_t DeviceOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_dev;
}

// Clones from into a probe file inside dir and removes it; "" when that worked, else why not.
std::string ProbeClone(const std::string& from, const std::string& dir) {
  std::string probe = ProbePath(dir, "");
  std::string refusal;
  try {
    CloneFile(from, probe, 0600);
  } catch (const std::exception& e) {
    refusal = e.what();
  }
  unlink(probe.c_str());
  return refusal;
}

void CopyBytes(int in, int out, const std::string& from, const std::string& to) {
  while (true) {
    ssize_t n = copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw std::runtime_error("could not copy \"" + from + "\" to \"" + to + "\": " + Reason(errno));
    if (n == 0) return;
  }
}

void CloneOrCopy(const std::string& from, const std::string& to, mode_t mode, bool may_copy) {
  OwnedFd in(open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (in.get() < 0) throw std::runtime_error("could not open \"" + from + "\": " + Reason(errno));
  OwnedFd out(open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (out.get() < 0) throw std::runtime_error("could not create \"" + to + "\": " + Reason(errno));
  if (ioctl(out.get(), FICLONE, in.get()) == 0) return;
  int err = errno;
  if (may_copy) return CopyBytes(in.get(), out.get(), from, to);
  unlink(to.c_str());
  throw std::runtime_error("could not clone \"" + from + "\" into \"" + to + "\" (FICLONE): " + Reason(err));
}

}  // namespace

void CloneFile(const std::string& from, const std::string& to, mode_t mode) {
  CloneOrCopy(from, to, mode, false);
}

void CloneOrCopyFile(const std::string& from, const std::string& to, mode_t mode) {
  CloneOrCopy(from, to, mode, true);
}

std::string SameFilesystemRefusal(const std::vector<ProbedPath>& paths) {
  if (paths.empty()) return "";
  const ProbedPath& first = paths.front();
  for (const auto& p : paths) {
    if (p.device == 0) return p.role + " (" + p.path + ") cannot be reached";
    if (p.device != first.device)
      return p.role + " (" + p.path + ") is on another filesystem than " + first.role + " (" + first.path +
             "), and extents are shared only inside one filesystem";
  }
  return "";
}

nlohmann::json SnapshotMethodChoice::ToJson() const {
  return {{"configured", configured}, {"method", method}, {"reason", reason}, {"possible", possible}};
}

SnapshotMethodChoice ResolveSnapshotMethod(const std::string& configured, const std::string& refusal) {
  SnapshotMethodChoice c;
  c.configured = configured;
  if (configured == "basebackup") {
    c.method = "basebackup";
    c.reason = "agent.snapshot_method is \"basebackup\"";
  } else if (refusal.empty()) {
    c.method = "reflink";
    c.reason = configured == "reflink"
                   ? "agent.snapshot_method is \"reflink\", and the filesystem clones extents"
                   : "the data directory, snapshot_dir and work_dir share one filesystem that clones extents";
  } else if (configured == "reflink") {
    c.method = "reflink";
    c.possible = false;
    c.reason = "agent.snapshot_method is \"reflink\", but " + refusal;
  } else {
    c.method = "basebackup";
    c.reason = "reflink is not possible: " + refusal;
  }
  return c;
}

std::string ReflinkRefusal(const AgentConfig& config) {
  std::vector<ProbedPath> paths;
  auto add = [&](const std::string& role, const std::string& path) {
    std::string existing = NearestExisting(path);
    paths.push_back({role, path, DeviceOf(existing)});
  };
  add("the data directory", config.data_directory);
  add("agent.snapshot_dir", config.snapshot_dir);
  add("agent.work_dir (dry-run clones)", config.ClonesDir());
  ExternalLayout layout = ReadExternalLayout(config.data_directory, "");
  for (const auto& ts : layout.tablespaces) add("tablespace " + ts.oid, ts.location);
  if (!layout.wal_dir.empty()) add("the WAL directory pg_wal links to", layout.wal_dir);
  if (std::string refusal = SameFilesystemRefusal(paths); !refusal.empty()) return refusal;
  if (!IsDirectory(config.snapshot_dir))
    return "agent.snapshot_dir (" + config.snapshot_dir + ") does not exist";
  std::string refusal = ProbeClone(JoinPath(config.data_directory, "PG_VERSION"), config.snapshot_dir);
  if (!refusal.empty()) return "the filesystem does not clone extents: " + refusal;
  return "";
}

SnapshotMethodChoice ChooseSnapshotMethod(const AgentConfig& config) {
  if (config.snapshot_method == "basebackup") return ResolveSnapshotMethod(config.snapshot_method, "");
  std::string refusal;
  try {
    refusal = ReflinkRefusal(config);
  } catch (const std::exception& e) {
    refusal = std::string("the probe failed: ") + e.what();
  }
  return ResolveSnapshotMethod(config.snapshot_method, refusal);
}

bool CopiesShareExtents(const std::string& from_dir, const std::string& to_dir) {
  std::string to = NearestExisting(to_dir);
  dev_t from_device = DeviceOf(from_dir);
  if (from_device == 0 || from_device != DeviceOf(to)) return false;
  // A file of our own to clone: from_dir may hold nothing small, and it is never modified.
  std::string seed = ProbePath(to, "-seed");
  try {
    AtomicWriteFile(seed, "probe\n", 0600);
  } catch (const std::exception&) {
    return false;
  }
  bool ok = ProbeClone(seed, to).empty();
  unlink(seed.c_str());
  return ok;
}

void DiscountSharedExtents(const std::string& source_dir, std::vector<Placement>& placements) {
  for (auto& placement : placements)
    if (placement.bytes && CopiesShareExtents(source_dir, placement.dir)) placement.bytes = 0;
}

uint64_t SnapshotExtraBytes(const std::string& method, uint64_t cluster_bytes, uint64_t wal_segment_bytes) {
  if (method != "reflink") return cluster_bytes;
  return 4 * wal_segment_bytes + cluster_bytes / 200;
}

}  // namespace safe_upgrade
