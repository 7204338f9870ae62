// Scratch-server control (see scratch_server.h).
#include "scratch/scratch_server.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "postgres/cluster.h"

namespace safe_upgrade {
namespace {

// Whether pid is a live (not zombie) postgres started on that data directory.
bool IsPostmasterOf(long pid, const std::string& data_dir) {
  if (pid <= 0 || !ProcessAlive(static_cast<pid_t>(pid))) return false;
  std::string cmdline = ReadFileOr("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  return cmdline.find(data_dir) != std::string::npos;
}

bool WaitGone(long pid, const std::string& data_dir, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (IsPostmasterOf(pid, data_dir)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace

long ScratchPostmaster(const std::string& data_dir) {
  std::ifstream in(JoinPath(data_dir, "postmaster.pid"));
  long pid = 0;
  if (!(in >> pid)) return 0;
  return IsPostmasterOf(pid, data_dir) ? pid : 0;
}

void StopScratchServer(int64_t upgrade_id, const std::string& bin_dir, const std::string& data_dir) {
  long pid = ScratchPostmaster(data_dir);
  if (!pid) return;
  try {
    ServerControl(bin_dir, data_dir, "pg_ctl").Stop("immediate", std::chrono::seconds(30));
  } catch (const std::exception& e) {
    spdlog::warn("upgrade {}: pg_ctl stop of the scratch server in {} failed: {}", upgrade_id, data_dir,
                 e.what());
  }
  // pg_ctl returns once postmaster.pid is gone, a moment before the process itself; its files
  // are removed only after it has exited.
  if (WaitGone(pid, data_dir, std::chrono::seconds(10))) return;
  kill(static_cast<pid_t>(pid), SIGKILL);
  WaitGone(pid, data_dir, std::chrono::seconds(10));
}

}  // namespace safe_upgrade
