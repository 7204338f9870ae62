// Finding processes that map a replaced shared library (see stale_libraries.h).
#include "checks/stale_libraries.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <sstream>

#include "base/fs_util.h"

namespace safe_upgrade {
namespace {

constexpr const char* kDeletedSuffix = " (deleted)";

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The parent pid from /proc/PID/stat ("pid (comm) state ppid ..."; comm may hold spaces and
// parentheses, so the fields are read after the last ')'). -1 when it cannot be read.
int ParentPid(int pid) {
  std::string stat = ReadFileOr("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  int ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

// Only the inode decides: on btrfs subvolumes and overlayfs the device in the maps is not the one
// stat() reports. A path that cannot be looked up for another reason than its absence (a
// permission, another mount namespace) cannot tell, so it is not called stale.
bool SameFileOnDisk(const std::string& path, const std::string&, unsigned long long inode) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return errno != ENOENT;
  return st.st_ino == inode;
}

// The shared objects of the system's own library directories (/lib, /usr/lib64,
// /usr/lib/x86_64-linux-gnu, ...), which every process maps: listed after the others.
bool InSystemLibraryDir(const std::string& path) {
  std::string dir = path.substr(0, path.rfind('/'));
  for (const char* base : {"/lib", "/lib64", "/usr/lib", "/usr/lib64"}) {
    if (dir == base) return true;
    std::string prefix = std::string(base) + "/";
    if (dir.rfind(prefix, 0) == 0 && dir.find('/', prefix.size()) == std::string::npos &&
        dir.find("-linux-", prefix.size()) != std::string::npos)
      return true;
  }
  return false;
}

}  // namespace

std::vector<int> ServerProcesses(const std::string& data_directory) {
  std::string pidfile = ReadFileOr(JoinPath(data_directory, "postmaster.pid"));
  int postmaster = atoi(pidfile.c_str());
  if (postmaster <= 0 || !PathExists("/proc/" + std::to_string(postmaster))) return {};
  std::vector<int> children;
  DIR* dir = opendir("/proc");
  if (dir) {
    while (struct dirent* e = readdir(dir)) {
      char* end = nullptr;
      long pid = strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 0 || pid == postmaster) continue;
      if (ParentPid(static_cast<int>(pid)) == postmaster) children.push_back(static_cast<int>(pid));
    }
    closedir(dir);
  }
  std::sort(children.begin(), children.end());
  std::vector<int> out = {postmaster};
  out.insert(out.end(), children.begin(), children.end());
  return out;
}

std::vector<StaleMapping> StaleMappingsIn(int pid, const std::string& maps_text,
                                          bool (*same_file)(const std::string&, const std::string&,
                                                            unsigned long long)) {
  std::map<std::string, std::string> stale;  // path -> reason
  std::istringstream lines(maps_text);
  std::string line;
  while (std::getline(lines, line)) {
    // address perms offset dev inode [path]: the path starts after the fifth field and may hold spaces.
    std::istringstream fields(line);
    std::string address, perms, offset, dev;
    unsigned long long inode = 0;
    if (!(fields >> address >> perms >> offset >> dev >> inode) || inode == 0) continue;
    std::string path;
    std::getline(fields, path);
    path.erase(0, path.find_first_not_of(' '));
    if (path.empty() || path[0] != '/') continue;
    bool deleted = EndsWith(path, kDeletedSuffix);
    if (deleted) path.erase(path.size() - std::string(kDeletedSuffix).size());
    if (Basename(path).find(".so") == std::string::npos || stale.count(path)) continue;
    if (deleted)
      stale[path] = "deleted";
    else if (!same_file(path, dev, inode))
      stale[path] = "replaced";
  }
  std::vector<StaleMapping> out;
  for (const auto& [path, reason] : stale) out.push_back({pid, path, reason});
  return out;
}

std::vector<StaleMapping> FindStaleLibraries(const std::vector<int>& pids) {
  std::vector<StaleMapping> out;
  for (int pid : pids) {
    std::string maps = ReadFileOr("/proc/" + std::to_string(pid) + "/maps");
    if (maps.empty()) continue;
    auto found = StaleMappingsIn(pid, maps, &SameFileOnDisk);
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

bool IsOneOfLibraries(const std::string& mapped_path, const std::set<std::string>& libraries) {
  std::string file = Basename(mapped_path);
  for (const auto& library : libraries) {
    std::string name = Basename(library);
    // PostgreSQL tries the name as given, then with ".so" added ("timescaledb-2.11.1.so").
    if (!name.empty() && (file == name || file == name + ".so")) return true;
  }
  return false;
}

nlohmann::json StaleLibrariesByPath(const std::vector<StaleMapping>& mappings, size_t max_pids) {
  // The system's libraries last, then by path.
  std::map<std::pair<bool, std::string>, nlohmann::json> by_path;
  for (const auto& m : mappings) {
    auto& entry = by_path[{InSystemLibraryDir(m.path), m.path}];
    if (entry.is_null())
      entry = {{"library", Basename(m.path)}, {"path", m.path}, {"reason", m.reason},
               {"pids", nlohmann::json::array()}, {"pid_count", 0}};
    if (entry["pids"].size() < max_pids) entry["pids"].push_back(m.pid);
    entry["pid_count"] = entry["pid_count"].get<size_t>() + 1;
  }
  nlohmann::json out = nlohmann::json::array();
  for (auto& [key, entry] : by_path) out.push_back(std::move(entry));
  return out;
}

}  // namespace safe_upgrade
