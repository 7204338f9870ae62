// The basebackup snapshot method: pg_basebackup into the snapshot's partial directory, then
// pg_verifybackup, which checks every file against the backup_manifest (and the WAL with
// pg_waldump). Its cost grows with the cluster: every byte is read, sent and written, then read
// again to verify.
//
// Plain format (-Fp): PostgreSQL 15's pg_verifybackup verifies only plain backups, a plain backup
// is directly startable (a clone or a rollback copies it, no extraction step), and it was faster
// than client-compressed tar in our measurements (DESIGN.md, verified fact 3).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>
#include <sstream>

#include "base/fs_util.h"
#include "postgres/backup_files.h"
#include "snapshots/snapshot_methods.h"

namespace fs = std::filesystem;

namespace safe_upgrade {

ProcessOptions SnapshotToolOptions(const AgentConfig& config) {
  ProcessOptions opt;
  // Untranslated messages, so progress lines parse and errors read the same in every locale.
  opt.env["LC_ALL"] = "C";
  opt.env["PGAPPNAME"] = "safe-upgrade-agent snapshot";
  opt.timeout = std::chrono::seconds(std::max(60, config.job_timeout_s));
  // The backup is taken while production serves; its client side and the verification yield.
  opt.low_priority = true;
  return opt;
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kBasebackupShare = 0.85;  // of the job's progress; verification is the rest
constexpr auto kProgressEventInterval = std::chrono::seconds(2);
const char* const kCorruptFailpoint = "snapshot:corrupt_before_verify";

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
  return out;
}

// Test-only: flips one byte in the middle of the first relation file of the backup, so that the
// verification failure path runs against a real pg_verifybackup rather than a simulated one.
std::string CorruptOneFile(const std::string& data_dir) {
  std::vector<std::string> candidates;
  for (const auto& e : fs::recursive_directory_iterator(JoinPath(data_dir, "base"))) {
    std::error_code ec;
    if (e.is_regular_file(ec) && e.file_size(ec) > 0) candidates.push_back(e.path().string());
  }
  if (candidates.empty()) throw std::runtime_error("no file to corrupt in " + data_dir);
  std::sort(candidates.begin(), candidates.end());
  const std::string& path = candidates.front();
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("could not open " + path);
  off_t offset = static_cast<off_t>(fs::file_size(path) / 2);
  unsigned char byte = 0;
  bool ok = pread(fd, &byte, 1, offset) == 1;
  byte ^= 0xFF;
  ok = ok && pwrite(fd, &byte, 1, offset) == 1 && fsync(fd) == 0;
  close(fd);
  if (!ok) throw std::runtime_error("could not corrupt " + path);
  return path.substr(data_dir.size() + 1);
}

// Keeps the job's progress and its event log current while pg_basebackup runs: the progress
// fraction on every line, an event at most every kProgressEventInterval (and for the last line).
class BasebackupReporter {
 public:
  explicit BasebackupReporter(JobContext& ctx) : ctx_(ctx), started_(Clock::now()) {}

  void OnLine(const std::string& line) {
    auto p = ParseBasebackupProgress(line);
    if (!p) {
      messages_.push_back(line);
      bool bad = line.find("error") != std::string::npos || line.find("warning") != std::string::npos ||
                 line.find("WARNING") != std::string::npos;
      ctx_.Event("snapshot", bad ? "warning" : "info", line);
      return;
    }
    last_ = *p;
    last_reported_ = false;
    ctx_.Progress(kBasebackupShare * p->percent / 100.0);
    auto now = Clock::now();
    if (!reported_any_ || now - last_event_ >= kProgressEventInterval) Report(now);
  }

  // After pg_basebackup exits: the final totals, unless already reported.
  void Finish() {
    if (last_ && !last_reported_) Report(Clock::now());
  }

  const std::vector<std::string>& messages() const { return messages_; }

 private:
  void Report(Clock::time_point now) {
    double done_mb = static_cast<double>(last_->done_kb) / 1024.0;
    double total_mb = static_cast<double>(last_->total_kb) / 1024.0;
    double elapsed = std::max(0.001, std::chrono::duration<double>(now - started_).count());
    double rate = done_mb / elapsed;
    std::ostringstream msg;
    msg.setf(std::ios::fixed);
    msg.precision(1);
    msg << "base backup " << last_->percent << "% (" << done_mb << " of " << total_mb << " MB, " << rate
        << " MB/s)";
    ctx_.Event("snapshot", "info", msg.str(),
               {{"percent", last_->percent},
                {"done_mb", Round1(done_mb)},
                {"total_mb", Round1(total_mb)},
                {"mb_per_s", Round1(rate)}});
    reported_any_ = true;
    last_reported_ = true;
    last_event_ = now;
  }

  JobContext& ctx_;
  Clock::time_point started_, last_event_;
  std::optional<BasebackupProgress> last_;
  bool reported_any_ = false, last_reported_ = false;
  std::vector<std::string> messages_;
};

// Never --no-sync: pg_basebackup then fsyncs every file of the backup before it exits, and a
// rollback relies on the snapshot being on disk (Publish renames it durably).
// Same-host tablespaces cannot be written to their own locations: each goes to
// <snapshot>/tablespaces.partial/<oid> (pg_basebackup refuses a non-empty location otherwise).
std::vector<std::string> BasebackupArgv(const AgentConfig& config, const SnapshotTarget& target,
                                        const ExternalLayout& layout) {
  std::vector<std::string> argv = {JoinPath(config.bin_dir, "pg_basebackup"),
                                   "-D",
                                   target.partial,
                                   "-Fp",
                                   "-Xstream",
                                   "--checkpoint=" + config.backup_checkpoint,
                                   "--progress",
                                   "--no-password",
                                   "--label",
                                   "safe-upgrade " + target.snapshot_id,
                                   "-h",
                                   config.socket_dir,
                                   "-p",
                                   std::to_string(config.port)};
  if (!config.db_user.empty()) {
    argv.push_back("-U");
    argv.push_back(config.db_user);
  }
  if (!config.backup_max_rate.empty()) {
    argv.push_back("--max-rate");
    argv.push_back(config.backup_max_rate);
  }
  for (const auto& mapping : TablespaceMappingArgs(layout, target.tablespaces_partial))
    argv.push_back(mapping);
  return argv;
}

}  // namespace

BackupTaken TakeBasebackup(JobContext& ctx, const SnapshotTarget& target, const ExternalLayout& layout) {
  const AgentConfig& config = ctx.config();
  auto started = Clock::now();
  BasebackupReporter reporter(ctx);
  ProcessOptions bb_opt = SnapshotToolOptions(config);
  bb_opt.on_stderr_line = [&](const std::string& line) { reporter.OnLine(line); };
  ctx.Info("snapshot",
           "pg_basebackup into " + target.partial +
               (config.backup_max_rate.empty() ? "" : " (max rate " + config.backup_max_rate + ")"));
  auto bb = RunProcess(BasebackupArgv(config, target, layout), bb_opt);
  reporter.Finish();
  double basebackup_s = SecondsSince(started);
  if (!bb.Ok()) {
    std::string stderr_text = Join(reporter.messages());
    ProcessResult shown = bb;
    shown.err = stderr_text;
    throw JobFailure(shown.Describe("pg_basebackup"),
                     {{"tool", "pg_basebackup"}, {"exit_code", bb.exit_code}, {"stderr", stderr_text}});
  }
  ctx.Failpoint("snapshot:after_basebackup");

  const char* fp = getenv("SAFE_UPGRADE_FAILPOINT");
  if (fp && std::string(fp) == kCorruptFailpoint) {
    std::string file = CorruptOneFile(target.partial);
    ctx.Event("snapshot", "warning",
              "test failpoint " + std::string(kCorruptFailpoint) + ": corrupted " + file);
  }
  auto verify_started = Clock::now();
  auto verify =
      RunProcess({JoinPath(config.bin_dir, "pg_verifybackup"), target.partial}, SnapshotToolOptions(config));
  double verify_s = SecondsSince(verify_started);
  if (!verify.Ok()) {
    std::string stderr_text = Trimmed(verify.err);
    ctx.Event("snapshot", "error",
              "the backup in " + target.partial +
                  " failed verification; it is kept for inspection and removed by the next snapshot attempt");
    throw JobFailure(verify.Describe("pg_verifybackup"),
                     {{"tool", "pg_verifybackup"}, {"exit_code", verify.exit_code}, {"stderr", stderr_text}});
  }
  ctx.Progress(0.95);
  ctx.Info("snapshot", "pg_verifybackup: backup verified", {{"verify_s", Round1(verify_s)}});
  ctx.Failpoint("snapshot:after_verify");

  BackupTaken taken;
  taken.method = "basebackup";
  BackupLabelFacts label = ParseBackupLabel(ReadFile(JoinPath(target.partial, "backup_label")));
  taken.start_lsn = label.start_lsn;
  taken.timeline = label.timeline;
  taken.stop_lsn = ParseManifestStopLsn(ReadFile(JoinPath(target.partial, "backup_manifest")));
  taken.verification = {{"method", "pg_verifybackup"},
                        {"checks",
                         "every file against the backup_manifest's sizes and checksums, and the "
                         "backup's WAL range with pg_waldump"},
                        {"verify_s", Round1(verify_s)}};
  taken.detail = {{"basebackup_s", Round1(basebackup_s)}, {"verify_s", Round1(verify_s)}};
  return taken;
}

}  // namespace safe_upgrade
