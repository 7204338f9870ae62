// Sessions that run an old copy of a shared library. A package upgrade replaces $libdir/X.so on
// disk, but every process that had loaded it keeps the file it mapped: the kernel shows it in
// /proc/PID/maps as "(deleted)", or with another inode than the file now at that path. After
// ALTER EXTENSION such a backend runs old code against the new catalog. The agent runs on the
// database host, so it reads the maps of the server's processes: the postmaster (its pid is the
// first line of postmaster.pid) and its children. Reading another process's maps needs its user
// (the agent's OS user is the server's) or root.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace safe_upgrade {

struct StaleMapping {
  int pid = 0;
  std::string path;    // the file as it was mapped (without " (deleted)")
  std::string reason;  // "deleted": no file at the path any more; "replaced": another file is there now
};

// The postmaster of the server in data_directory (first) and its children (in pid order); empty
// when the server is not running (no postmaster.pid, or its pid is not alive).
std::vector<int> ServerProcesses(const std::string& data_directory);

// The shared objects (names containing ".so") that the processes map and that are no longer the
// file at their path, one per process and path, in pid then path order. A process that ended or
// whose maps cannot be read is skipped.
std::vector<StaleMapping> FindStaleLibraries(const std::vector<int>& pids);

// One maps file's lines (the text of /proc/PID/maps) and how to look a path up on disk: the
// parsing behind FindStaleLibraries, exposed for the unit tests. same_file(path, dev, inode) says
// whether the file now at path is that device and inode.
std::vector<StaleMapping> StaleMappingsIn(int pid, const std::string& maps_text,
                                          bool (*same_file)(const std::string& path, const std::string& dev,
                                                            unsigned long long inode));

// Whether a mapped path is one of the libraries, given as PostgreSQL names them ("$libdir/postgis-3",
// "timescaledb-2.11.1", "/usr/lib/x/y.so"): by file name, as given or with ".so" added.
bool IsOneOfLibraries(const std::string& mapped_path, const std::set<std::string>& libraries);

// The mappings grouped by file, for Ping: [{library (the file name), path, reason, pids (at most
// max_pids of them), pid_count}], the system's own library directories (/lib, /usr/lib64,
// /usr/lib/<triplet>, ...) last, so that a list cut to fit keeps the extensions' libraries.
nlohmann::json StaleLibrariesByPath(const std::vector<StaleMapping>& mappings, size_t max_pids = 64);

}  // namespace safe_upgrade
