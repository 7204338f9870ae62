// Copy with progress reporting.
#include "base/copy_progress.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "base/fs_util.h"

namespace safe_upgrade {

std::string Megabytes(uint64_t bytes) { return std::to_string((bytes + 512 * 1024) / (1024 * 1024)) + " MB"; }

double CopyTreeReporting(JobContext& ctx, const std::string& phase, const std::string& from,
                         const std::string& to, uint64_t total, double progress_from, double progress_to) {
  // The copy is one cp; a watcher reports how far it got from the size of the target.
  std::atomic<bool> copying{true};
  std::thread watcher([&] {
    auto last_event = std::chrono::steady_clock::now();
    while (copying.load()) {
      for (int i = 0; i < 20 && copying.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (!copying.load()) break;
      uint64_t done = IsDirectory(to) ? TreeSize(to) : 0;
      double fraction = total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
      ctx.Progress(progress_from + (progress_to - progress_from) * fraction);
      if (std::chrono::steady_clock::now() - last_event > std::chrono::seconds(10)) {
        last_event = std::chrono::steady_clock::now();
        ctx.Info(phase, "copied " + Megabytes(done) + " of " + Megabytes(total),
                 {{"bytes_done", done}, {"bytes_total", total}});
      }
    }
  });
  auto started = std::chrono::steady_clock::now();
  try {
    CopyTree(from, to, /*low_priority=*/true);
  } catch (...) {
    copying = false;
    watcher.join();
    throw;
  }
  copying = false;
  watcher.join();
  ctx.Progress(progress_to);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace safe_upgrade
