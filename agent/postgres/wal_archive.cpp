// WAL archive commands. PostgreSQL runs `wal-push %p` as archive_command (cwd: the data directory)
// and `wal-fetch %f %p` as restore_command. The archive is a flat directory of files named as
// PostgreSQL names them, plus archive.json recording the system identifier it belongs to.
//
// Everything a rollback depends on passes through here, so pushing is strict: a file is only
// visible under its final name once its content is durable, an existing name is never
// overwritten, and a segment from another cluster is refused instead of silently mixed in.
#include "postgres/wal_archive.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/fs_util.h"
#include "postgres/cluster.h"

namespace safe_upgrade {
namespace {

// PostgreSQL 15's WAL page format (access/xlog_internal.h). The long header opens every segment:
//   XLogPageHeaderData { uint16 xlp_magic; uint16 xlp_info; uint32 xlp_tli; uint64 xlp_pageaddr;
//                        uint32 xlp_rem_len; } (24 bytes with the padding that aligns the struct)
//   then uint64 xlp_sysid; uint32 xlp_seg_size; uint32 xlp_xlog_blcksz.
// Fields are read at fixed offsets rather than through a struct so that padding rules are explicit;
// WAL is written in the host's byte order, and archive and server share the host.
constexpr uint16_t kXlogPageMagic15 = 0xD110;
constexpr uint16_t kXlpLongHeader = 0x0002;
constexpr size_t kOffMagic = 0, kOffInfo = 2, kOffPageAddr = 8, kOffSysid = 24, kOffSegSize = 32,
                 kOffBlcksz = 36;
constexpr size_t kLongHeaderSize = 40;

constexpr const char* kArchiveMeta = "archive.json";

class ArchiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void ThrowErrno(const std::string& what, const std::string& path) {
  throw ArchiveError(what + " \"" + path + "\": " + strerror(errno));
}

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsWalSegmentName(const std::string& name) {
  static const std::regex re("^[0-9A-F]{24}$");
  return std::regex_match(name, re);
}

// File names PostgreSQL asks for: segments, .partial, .history and .backup files. Anything with a
// path separator (or a dot-dot) is refused, so %f can never point outside the archive.
bool IsArchivableName(const std::string& name) {
  static const std::regex re("^[0-9A-F]{8}(\\.history|[0-9A-F]{16}(\\.partial|\\.[0-9A-F]{8}\\.backup)?)$");
  return std::regex_match(name, re);
}

template <typename T>
T ReadAt(const unsigned char* buf, size_t offset) {
  T v;
  memcpy(&v, buf + offset, sizeof v);
  return v;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Close() {
    if (fd_ >= 0 && close(fd_) != 0) {
      fd_ = -1;
      throw ArchiveError(std::string("close failed: ") + strerror(errno));
    }
    fd_ = -1;
  }

 private:
  int fd_;
};

// Runs io (read or write) until len bytes are done, retrying EINTR; a read stops early at the
// end of the file (io returns 0).
template <typename Io>
size_t Full(Io io, size_t len, const char* what, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = io(done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowErrno(what, path);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

size_t ReadFull(int fd, unsigned char* buf, size_t len, const std::string& path) {
  return Full([&](size_t done) { return read(fd, buf + done, len - done); }, len, "could not read", path);
}

void WriteFull(int fd, const unsigned char* buf, size_t len, const std::string& path) {
  auto write_some = [&](size_t done) { return write(fd, buf + done, len - done); };
  if (Full(write_some, len, "could not write", path) < len) ThrowErrno("could not write", path);
}

// Copies src to a new file tmp (which must not exist), fsyncing it when durable is set.
void CopyToNewFile(const std::string& src, const std::string& tmp, bool durable) {
  Fd in(open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) ThrowErrno("could not open", src);
  Fd out(open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) ThrowErrno("could not create", tmp);
  std::vector<unsigned char> buf(1 << 20);
  try {
    while (true) {
      size_t n = ReadFull(in.get(), buf.data(), buf.size(), src);
      if (n == 0) break;
      WriteFull(out.get(), buf.data(), n, tmp);
    }
    if (durable && fsync(out.get()) != 0) ThrowErrno("could not fsync", tmp);
    out.Close();
  } catch (...) {
    unlink(tmp.c_str());
    throw;
  }
}

bool SameContent(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (stat(a.c_str(), &sa) != 0) ThrowErrno("could not stat", a);
  if (stat(b.c_str(), &sb) != 0) ThrowErrno("could not stat", b);
  if (sa.st_size != sb.st_size) return false;
  Fd fa(open(a.c_str(), O_RDONLY | O_CLOEXEC)), fb(open(b.c_str(), O_RDONLY | O_CLOEXEC));
  if (fa.get() < 0) ThrowErrno("could not open", a);
  if (fb.get() < 0) ThrowErrno("could not open", b);
  std::vector<unsigned char> ba(1 << 20), bb(1 << 20);
  while (true) {
    size_t na = ReadFull(fa.get(), ba.data(), ba.size(), a);
    size_t nb = ReadFull(fb.get(), bb.data(), bb.size(), b);
    if (na != nb || memcmp(ba.data(), bb.data(), na) != 0) return false;
    if (na == 0) return true;
  }
}

struct SegmentHeader {
  uint64_t system_identifier;
  uint32_t seg_size, blcksz;
  uint64_t page_address;  // the LSN the segment starts at
};

SegmentHeader ReadSegmentHeader(const std::string& path, const std::string& name) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) ThrowErrno("could not open", path);
  unsigned char buf[kLongHeaderSize];
  if (ReadFull(fd.get(), buf, sizeof buf, path) != sizeof buf)
    throw ArchiveError("\"" + name + "\" is too short to be a WAL segment");
  auto magic = ReadAt<uint16_t>(buf, kOffMagic);
  auto info = ReadAt<uint16_t>(buf, kOffInfo);
  if (magic != kXlogPageMagic15) {
    char hex[16];
    snprintf(hex, sizeof hex, "%04X", magic);
    throw ArchiveError("\"" + name + "\" is not a PostgreSQL 15 WAL segment (page magic " + hex +
                       ", expected D110)");
  }
  if (!(info & kXlpLongHeader))
    throw ArchiveError("\"" + name + "\" does not start with a long WAL page header");
  struct stat st;
  if (fstat(fd.get(), &st) != 0) ThrowErrno("could not stat", path);
  SegmentHeader h{ReadAt<uint64_t>(buf, kOffSysid), ReadAt<uint32_t>(buf, kOffSegSize),
                  ReadAt<uint32_t>(buf, kOffBlcksz), ReadAt<uint64_t>(buf, kOffPageAddr)};
  if (static_cast<uint64_t>(st.st_size) != h.seg_size)
    throw ArchiveError("\"" + name + "\" has " + std::to_string(st.st_size) +
                       " bytes but its header says the segment size is " + std::to_string(h.seg_size));
  return h;
}

// Writes content under path through a pid-unique temporary file, so that two writers (the
// archiver and a person running wal-push by hand) never share a temporary file.
void DurableWrite(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  Fd out(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (out.get() < 0) ThrowErrno("could not create", tmp);
  WriteFull(out.get(), reinterpret_cast<const unsigned char*>(content.data()), content.size(), tmp);
  if (fsync(out.get()) != 0) ThrowErrno("could not fsync", tmp);
  out.Close();
  if (rename(tmp.c_str(), path.c_str()) != 0) ThrowErrno("could not rename to", path);
  FsyncParentDir(path);
}

// The system identifier the archive belongs to, recorded on first use from the cluster's control
// file. Kept in the archive (not read from the cluster each time) so that the archive itself
// says whose it is, even after the cluster is gone or replaced.
uint64_t ArchiveSystemIdentifier(const AgentConfig& config) {
  std::string meta_path = JoinPath(config.wal_archive_dir, kArchiveMeta);
  if (PathExists(meta_path)) {
    auto doc = nlohmann::json::parse(ReadFile(meta_path));
    return std::stoull(doc.at("system_identifier").get<std::string>());
  }
  auto facts = ReadControlData(config.bin_dir, config.data_directory);
  if (facts.system_identifier == 0)
    throw ArchiveError("could not read the system identifier of \"" + config.data_directory + "\"");
  nlohmann::json doc = {{"system_identifier", std::to_string(facts.system_identifier)},
                        {"data_directory", config.data_directory},
                        {"created_at", NowIso8601()}};
  DurableWrite(meta_path, doc.dump(2) + "\n");
  return facts.system_identifier;
}

// An identical file already archived may be one whose earlier push was cut short before its
// fsync (a crash after the rename): success is reported only once it is on disk, with its name.
int ConfirmDurable(const std::string& dest) {
  FsyncPath(dest);
  FsyncParentDir(dest);
  return 0;
}

int Push(const AgentConfig& config, const std::string& source_path) {
  std::string name = Basename(source_path);
  if (!IsArchivableName(name))
    throw ArchiveError("\"" + name + "\" is not a WAL file name this archive accepts");
  if (!IsDirectory(config.wal_archive_dir))
    throw ArchiveError("WAL archive directory \"" + config.wal_archive_dir + "\" does not exist");
  if (IsWalSegmentName(name)) {
    SegmentHeader h = ReadSegmentHeader(source_path, name);
    uint64_t archive_sysid = ArchiveSystemIdentifier(config);
    if (h.system_identifier != archive_sysid)
      throw ArchiveError("segment \"" + name + "\" belongs to database system " +
                         std::to_string(h.system_identifier) + ", but the archive \"" +
                         config.wal_archive_dir + "\" belongs to system " + std::to_string(archive_sysid));
  }
  std::string dest = JoinPath(config.wal_archive_dir, name);
  if (PathExists(dest)) {
    // PostgreSQL retries a push whose success it did not see (a crash after our rename), so the
    // same content under the same name is success. Different content means two histories are
    // writing into one archive, and overwriting would destroy the one a rollback may need.
    if (SameContent(source_path, dest)) return ConfirmDurable(dest);
    throw ArchiveError("\"" + name + "\" is already archived in \"" + config.wal_archive_dir +
                       "\" with different content; refusing to overwrite it");
  }
  std::string tmp = dest + ".tmp." + std::to_string(getpid());
  unlink(tmp.c_str());  // left over from an earlier push by a process with our pid
  CopyToNewFile(source_path, tmp, true);
  // link() publishes the file only if the name is still free, so a concurrent push of the same
  // name can never be overwritten between our check and here.
  if (link(tmp.c_str(), dest.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST) {
      bool same = SameContent(tmp, dest);
      unlink(tmp.c_str());
      if (same) return ConfirmDurable(dest);
      throw ArchiveError("\"" + name + "\" is already archived in \"" + config.wal_archive_dir +
                         "\" with different content; refusing to overwrite it");
    }
    if (err != EPERM && err != EOPNOTSUPP && err != EXDEV) {
      unlink(tmp.c_str());
      errno = err;
      ThrowErrno("could not link to", dest);
    }
    // Filesystems without hard links: a plain rename (the existence check above still holds
    // for the archiver, which pushes one file at a time).
    if (rename(tmp.c_str(), dest.c_str()) != 0) {
      err = errno;
      unlink(tmp.c_str());
      errno = err;
      ThrowErrno("could not rename to", dest);
    }
  } else {
    unlink(tmp.c_str());
  }
  FsyncParentDir(dest);
  return 0;
}

// A segment's place in the WAL stream, from its name: the log and segment numbers, whatever the
// timeline. Empty for names that are not segments (or their .partial and .backup files).
std::optional<std::pair<uint32_t, uint32_t>> SegmentPosition(const std::string& name) {
  if (name.size() < 24 || name.find(".history") != std::string::npos || !IsArchivableName(name))
    return std::nullopt;
  return std::make_pair(static_cast<uint32_t>(std::stoul(name.substr(8, 8), nullptr, 16)),
                        static_cast<uint32_t>(std::stoul(name.substr(16, 8), nullptr, 16)));
}

// The segment size of the archive, from the first segment found in it (0 when it holds none).
uint32_t ArchiveSegmentSize(const AgentConfig& config) {
  if (!IsDirectory(config.wal_archive_dir)) return 0;
  for (const auto& entry : std::filesystem::directory_iterator(config.wal_archive_dir)) {
    std::string name = entry.path().filename().string();
    if (!IsWalSegmentName(name)) continue;
    try {
      return ReadSegmentHeader(entry.path().string(), name).seg_size;
    } catch (const ArchiveError&) {
    }
  }
  return 0;
}

}  // namespace

int WalPush(const AgentConfig& config, const std::string& source_path) {
  try {
    return Push(config, source_path);
  } catch (const std::exception& e) {
    fprintf(stderr, "wal-push: %s\n", e.what());
    return 1;
  }
}

int WalFetch(const AgentConfig& config, const std::string& file_name, const std::string& dest_path) {
  try {
    if (!IsArchivableName(file_name))
      throw ArchiveError("\"" + file_name + "\" is not a WAL file name this archive serves");
    std::string src = JoinPath(config.wal_archive_dir, file_name);
    if (!PathExists(src)) {
      // Normal at the end of recovery: PostgreSQL asks for the next file until there is none.
      fprintf(stderr, "wal-fetch: \"%s\" is not in the archive\n", file_name.c_str());
      return 1;
    }
    std::string tmp = dest_path + ".tmp." + std::to_string(getpid());
    unlink(tmp.c_str());
    // No fsync: PostgreSQL fsyncs a restored file itself when it keeps it (durable_rename), and
    // RECOVERYXLOG is thrown away after replay.
    CopyToNewFile(src, tmp, false);
    if (rename(tmp.c_str(), dest_path.c_str()) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      errno = err;
      ThrowErrno("could not rename to", dest_path);
    }
    return 0;
  } catch (const std::exception& e) {
    // Not 1: a broken archive must not look like the normal end of the archive to a person
    // reading the exit code. PostgreSQL treats both as "not available"; an unreached recovery
    // target then still fails recovery loudly.
    fprintf(stderr, "wal-fetch: %s\n", e.what());
    return 2;
  }
}

WalArchiveSummary SummarizeWalArchive(const AgentConfig& config) {
  WalArchiveSummary out;
  if (!IsDirectory(config.wal_archive_dir)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(config.wal_archive_dir)) {
    std::string name = entry.path().filename().string();
    if (!IsArchivableName(name) || !entry.is_regular_file()) continue;
    ++out.files;
    out.bytes += entry.file_size();
    if (name > out.newest_file) out.newest_file = name;
    if (IsWalSegmentName(name) &&
        (out.oldest_segment.empty() || name.substr(8) < out.oldest_segment.substr(8)))
      out.oldest_segment = name;
  }
  out.segment_bytes = ArchiveSegmentSize(config);
  return out;
}

std::string WalSegmentName(uint32_t timeline, uint64_t lsn, uint32_t seg_size) {
  uint64_t segments_per_log = 0x100000000ULL / seg_size;
  uint64_t segno = lsn / seg_size;
  char name[32];
  snprintf(name, sizeof name, "%08X%08X%08X", timeline, static_cast<uint32_t>(segno / segments_per_log),
           static_cast<uint32_t>(segno % segments_per_log));
  return name;
}

size_t ProveWalArchiveCovers(const AgentConfig& config, uint64_t system_identifier, uint32_t timeline,
                             uint64_t from_lsn, uint64_t to_lsn) {
  if (to_lsn < from_lsn) throw ArchiveError("the WAL range to prove ends before it starts");
  uint32_t seg_size = ArchiveSegmentSize(config);
  if (seg_size == 0)
    throw ArchiveError("the WAL archive \"" + config.wal_archive_dir +
                       "\" holds no WAL segment at all, so nothing could be replayed from it; check that "
                       "archive_command is the agent's wal-push");
  size_t checked = 0;
  for (uint64_t segno = from_lsn / seg_size; segno <= to_lsn / seg_size; ++segno, ++checked) {
    std::string name = WalSegmentName(timeline, segno * seg_size, seg_size);
    std::string path = JoinPath(config.wal_archive_dir, name);
    if (!PathExists(path))
      throw ArchiveError("WAL segment " + name + " is not in the archive \"" + config.wal_archive_dir +
                         "\", so a rollback could not replay past it; check archive_command (it must be the "
                         "agent's wal-push) and pg_stat_archiver");
    SegmentHeader h = ReadSegmentHeader(path, name);
    if (h.system_identifier != system_identifier)
      throw ArchiveError("archived WAL segment " + name + " belongs to database system " +
                         std::to_string(h.system_identifier) + ", not to this cluster (" +
                         std::to_string(system_identifier) + ")");
    if (h.page_address != segno * seg_size)
      throw ArchiveError("archived WAL segment " + name + " does not start where its name says");
  }
  return checked;
}

WalPruneOutcome PruneWalArchive(const AgentConfig& config, uint64_t keep_from_lsn) {
  WalPruneOutcome out;
  uint32_t seg_size = ArchiveSegmentSize(config);
  if (seg_size == 0) return out;
  auto keep_from = SegmentPosition(WalSegmentName(1, keep_from_lsn, seg_size));
  for (const auto& entry : std::filesystem::directory_iterator(config.wal_archive_dir)) {
    std::string name = entry.path().filename().string();
    auto position = SegmentPosition(name);
    if (!position || !entry.is_regular_file() || *position >= *keep_from) continue;
    uint64_t size = entry.file_size();
    if (unlink(entry.path().c_str()) != 0) ThrowErrno("could not remove", entry.path().string());
    ++out.files;
    out.bytes += size;
  }
  if (out.files > 0) {
    FsyncPath(config.wal_archive_dir);
    out.kept_from = WalSegmentName(1, keep_from_lsn, seg_size).substr(8);
  }
  return out;
}

}  // namespace safe_upgrade
