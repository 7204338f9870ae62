// The snapshot job: a verified base backup of the cluster the agent serves, taken for one upgrade
// into <snapshot_dir>/snap-<id>/data, with snapshot.json describing it. Dry runs clone it and a
// rollback restores it, so nothing is published under that name until pg_verifybackup has
// accepted it.
//
// Plain format (-Fp): PostgreSQL 15's pg_verifybackup verifies only plain backups, a plain backup
// is directly startable (a clone or a rollback copies it, no extraction step), and it was faster
// than client-compressed tar in our measurements (DESIGN.md, verified fact 3).
#include "snapshot.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <regex>
#include <sstream>

#include "catalog.h"
#include "cluster.h"
#include "fs_util.h"
#include "jobs.h"
#include "process.h"
#include "retention.h"
#include "tablespaces.h"
#include "wal_archive.h"

namespace fs = std::filesystem;

namespace safe_upgrade {

std::optional<BasebackupProgress> ParseBasebackupProgress(const std::string& line) {
  static const std::regex re(R"(^\s*([0-9]+)/([0-9]+) kB \(([0-9]+)%\))");
  std::smatch m;
  if (!std::regex_search(line, m, re)) return std::nullopt;
  BasebackupProgress p;
  p.done_kb = std::stoull(m[1]);
  p.total_kb = std::stoull(m[2]);
  p.percent = std::min(100, std::stoi(m[3]));
  return p;
}

uint64_t ParseLsn(const std::string& lsn) {
  static const std::regex re("^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$");
  std::smatch m;
  if (!std::regex_match(lsn, m, re)) throw std::runtime_error("malformed LSN \"" + lsn + "\"");
  return (std::stoull(m[1], nullptr, 16) << 32) | std::stoull(m[2], nullptr, 16);
}

BackupLabelFacts ParseBackupLabel(const std::string& text) {
  static const std::regex start_re(R"(^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+))");
  static const std::regex tli_re(R"(^START TIMELINE: ([0-9]+))");
  BackupLabelFacts facts;
  std::istringstream in(text);
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_search(line, m, start_re)) facts.start_lsn = m[1];
    if (std::regex_search(line, m, tli_re)) facts.timeline = static_cast<uint32_t>(std::stoul(m[1]));
  }
  if (facts.start_lsn.empty()) throw std::runtime_error("backup_label has no START WAL LOCATION line");
  if (facts.timeline == 0) throw std::runtime_error("backup_label has no START TIMELINE line");
  return facts;
}

std::string ParseManifestStopLsn(const std::string& manifest_text) {
  auto manifest = nlohmann::json::parse(manifest_text);
  auto ranges = manifest.find("WAL-Ranges");
  if (ranges == manifest.end() || !ranges->is_array() || ranges->empty())
    throw std::runtime_error("backup_manifest has no WAL-Ranges");
  // The ranges run over the timelines the backup spanned; the backup stopped at the end of the
  // newest, which is the highest End-LSN whatever the listing order.
  std::string best;
  uint64_t best_pos = 0;
  for (const auto& r : *ranges) {
    std::string end = r.at("End-LSN").get<std::string>();
    uint64_t pos = ParseLsn(end);
    if (best.empty() || pos > best_pos) {
      best = end;
      best_pos = pos;
    }
  }
  return best;
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kBasebackupShare = 0.85;  // of the job's progress; verification is the rest
constexpr auto kProgressEventInterval = std::chrono::seconds(2);
constexpr uint64_t kMiB = 1024 * 1024;

// The directory PostgreSQL keeps inside each tablespace location (TABLESPACE_VERSION_DIRECTORY).
const char* const kTablespaceVersionDirSql =
    "SELECT 'PG_' || current_setting('server_version_num')::int / 10000 || '_' || catalog_version_no "
    "FROM pg_control_system()";
const char* const kCorruptFailpoint = "snapshot:corrupt_before_verify";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Round1(double v) { return static_cast<double>(static_cast<int64_t>(v * 10 + 0.5)) / 10; }

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
    double elapsed = std::max(0.001, Seconds(now - started_));
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

uint64_t ClusterBytes(PgConn& conn) {
  return std::stoull(conn.Exec("SELECT sum(pg_database_size(oid))::bigint::text FROM pg_database").Scalar());
}

uint64_t MbToBytes(uint64_t mb) {
  return mb > std::numeric_limits<uint64_t>::max() / kMiB ? std::numeric_limits<uint64_t>::max() : mb * kMiB;
}

// Refuses before anything is copied when the snapshot would eat into the reserve. The whole
// snapshot, its tablespaces included, lands in snapshot_dir, and pg_database_size counts every
// tablespace of a database.
void CheckFreeSpace(JobContext& ctx, PgConn& conn, const std::string& snapshot_id) {
  const AgentConfig& config = ctx.config();
  uint64_t cluster_bytes = ClusterBytes(conn);
  uint64_t reserve_bytes = MbToBytes(config.disk_reserve_mb);
  uint64_t free_bytes = FreeBytes(config.snapshot_dir);
  uint64_t needed = cluster_bytes > std::numeric_limits<uint64_t>::max() - reserve_bytes
                        ? std::numeric_limits<uint64_t>::max()
                        : cluster_bytes + reserve_bytes;
  nlohmann::json detail = {{"snapshot_dir", config.snapshot_dir},
                           {"free_bytes", free_bytes},
                           {"cluster_bytes", cluster_bytes},
                           {"reserve_bytes", reserve_bytes}};
  if (free_bytes < needed) {
    detail["hint"] =
        "Free space in the snapshot directory, or lower agent.disk_reserve_mb in the agent's configuration.";
    throw JobFailure("not enough free space for snapshot " + snapshot_id + " in \"" + config.snapshot_dir +
                         "\": " + std::to_string(free_bytes / kMiB) + " MB free, but the cluster is " +
                         std::to_string((cluster_bytes + kMiB - 1) / kMiB) + " MB and " +
                         std::to_string(config.disk_reserve_mb) + " MB must remain free (agent.disk_reserve_mb)",
                     detail);
  }
  ctx.Info("snapshot",
           "free space checked: " + std::to_string(free_bytes / kMiB) + " MB free, cluster " +
               std::to_string((cluster_bytes + kMiB - 1) / kMiB) + " MB, reserve " +
               std::to_string(config.disk_reserve_mb) + " MB",
           detail);
}

// Never --no-sync: pg_basebackup then fsyncs every file of the backup before it exits, and a
// rollback relies on the snapshot being on disk (Publish renames it durably).
// Same-host tablespaces cannot be written to their own locations: each goes to
// <snapshot>/tablespaces.partial/<oid> (pg_basebackup refuses a non-empty location otherwise).
std::vector<std::string> BasebackupArgv(const AgentConfig& config, const std::string& target,
                                        const std::string& snapshot_id, const ExternalLayout& layout,
                                        const std::string& tablespaces_target) {
  std::vector<std::string> argv = {JoinPath(config.bin_dir, "pg_basebackup"),
                                    "-D",
                                    target,
                                    "-Fp",
                                    "-Xstream",
                                    "--checkpoint=fast",
                                    "--progress",
                                    "--no-password",
                                    "--label",
                                    "safe-upgrade " + snapshot_id,
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
  for (const auto& mapping : TablespaceMappingArgs(layout, tablespaces_target)) argv.push_back(mapping);
  return argv;
}

ProcessOptions ToolOptions(const AgentConfig& config) {
  ProcessOptions opt;
  // Untranslated messages, so progress lines parse and errors read the same in every locale.
  opt.env["LC_ALL"] = "C";
  opt.env["PGAPPNAME"] = "safe-upgrade-agent snapshot";
  opt.timeout = std::chrono::seconds(std::max(60, config.job_timeout_s));
  // The backup is taken while production serves; its client side and the verification yield.
  opt.low_priority = true;
  return opt;
}

// Our own scratch copies from an interrupted run of this job: never a published snapshot.
void RemoveLeftovers(JobContext& ctx, const std::string& dir) {
  for (const char* name : {"data.partial", "data.superseded", "snapshot.superseded.json",
                           "tablespaces.partial", "tablespaces.superseded"}) {
    std::string path = JoinPath(dir, name);
    if (!PathExists(path)) continue;
    ctx.Info("snapshot", "removing " + path + ", left by an interrupted snapshot");
    RemoveTree(path);
  }
}

// Publishes the verified backup as the snapshot. A snapshot of this upgrade taken earlier is
// unpublished (its metadata first, so no moment pairs old metadata with new data) and removed
// only once the new one is in place. The tablespaces move with the data, and the data's links
// follow them to <snapshot>/tablespaces/<oid>.
void Publish(const std::string& dir, const std::string& partial, const std::string& data_dir,
             const std::string& meta_path, const nlohmann::json& meta, const ExternalLayout& layout) {
  std::string old_meta = JoinPath(dir, "snapshot.superseded.json");
  std::string old_data = JoinPath(dir, "data.superseded");
  std::string tablespaces = JoinPath(dir, "tablespaces"),
              old_tablespaces = JoinPath(dir, "tablespaces.superseded");
  if (PathExists(meta_path)) DurableRename(meta_path, old_meta);
  if (PathExists(data_dir)) DurableRename(data_dir, old_data);
  if (PathExists(tablespaces)) DurableRename(tablespaces, old_tablespaces);
  if (!layout.tablespaces.empty()) DurableRename(JoinPath(dir, "tablespaces.partial"), tablespaces);
  for (const auto& ts : layout.tablespaces)
    PointTablespaceLink(partial, ts.oid, JoinPath(tablespaces, ts.oid));
  DurableRename(partial, data_dir);
  AtomicWriteFile(meta_path, meta.dump(2) + "\n", 0600);
  for (const auto& old : {old_data, old_tablespaces, old_meta})
    if (PathExists(old)) RemoveTree(old);
}

void RunRetention(JobContext& ctx, const std::string& snapshot_id) {
  const AgentConfig& config = ctx.config();
  try {
    auto conn = ConnectProduction(config, "safe-upgrade-agent retention");
    auto outcome = ApplySnapshotRetention(config, InFlightUpgradeIds(*conn), snapshot_id);
    for (const auto& id : outcome.removed)
      ctx.Info("retention", "removed snapshot " + id + " (agent.snapshot_retention = " +
                                std::to_string(config.snapshot_retention) + ")");
    if (!outcome.kept_in_flight.empty()) {
      std::string ids;
      for (const auto& id : outcome.kept_in_flight) ids += (ids.empty() ? "" : ", ") + id;
      ctx.Info("retention", "kept snapshots of in-flight upgrades that retention would otherwise remove: " + ids);
    }
    if (auto needed_from = WalNeededFrom(config)) {
      auto pruned = PruneWalArchive(config, *needed_from);
      if (pruned.files > 0)
        ctx.Info("retention",
                 "removed " + std::to_string(pruned.files) + " archived WAL file(s) (" +
                     std::to_string(pruned.bytes / (1024 * 1024)) +
                     " MB) that no kept snapshot needs; the archive "
                     "keeps WAL from segment position " +
                     pruned.kept_from,
                 {{"removed_files", pruned.files},
                  {"removed_bytes", pruned.bytes},
                  {"kept_from", pruned.kept_from}});
    }
  } catch (const std::exception& e) {
    // The snapshot itself is good; a retention problem must not fail the upgrade.
    ctx.Event("retention", "warning", std::string("snapshot retention skipped: ") + e.what());
  }
}

}  // namespace

nlohmann::json RunSnapshotJob(JobContext& ctx) {
  const AgentConfig& config = ctx.config();
  const int64_t upgrade_id = ctx.upgrade_id();
  const std::string snapshot_id = SnapshotIdFor(upgrade_id);
  const std::string dir = SnapshotDir(config, snapshot_id);
  const std::string partial = JoinPath(dir, "data.partial");
  const std::string data_dir = SnapshotDataDir(config, snapshot_id);
  const std::string meta_path = SnapshotMetaPath(config, snapshot_id);

  auto conn = ConnectProduction(config, "safe-upgrade-agent snapshot");
  UpgradeRecord upgrade;
  try {
    upgrade = LoadUpgrade(*conn, upgrade_id);
  } catch (const PgError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw JobFailure(e.what());
  }
  // Once past snapshotting, a restore point may exist that must lie after this snapshot's backup;
  // retaking it then would make that restore point unreachable.
  if (upgrade.state != "queued" && upgrade.state != "snapshotting")
    throw JobFailure("upgrade " + std::to_string(upgrade_id) + " is " + upgrade.state +
                         "; a snapshot is taken only while an upgrade is queued or snapshotting",
                     {{"state", upgrade.state}});

  // pg_basebackup reaches the server through the socket and port; it must be the cluster whose
  // data directory we serve, or a rollback would restore someone else's data.
  uint64_t served_sysid = ReadControlData(config.bin_dir, config.data_directory).system_identifier;
  std::string server_sysid = conn->Exec("SELECT system_identifier::text FROM pg_control_system()").Scalar();
  if (server_sysid != std::to_string(served_sysid))
    throw JobFailure("the server on port " + std::to_string(config.port) + " (system identifier " + server_sysid +
                     ") is not the cluster in \"" + config.data_directory + "\" (system identifier " +
                     std::to_string(served_sysid) + ")");

  // Tablespaces and a linked pg_wal: what a rollback will have to set aside and restore, checked
  // before anything is copied.
  ExternalLayout layout =
      ReadExternalLayout(config.data_directory, conn->Exec(kTablespaceVersionDirSql).Scalar());
  if (std::string refusal = LayoutRefusal(layout, config.data_directory); !refusal.empty())
    throw JobFailure("cannot snapshot this cluster for a rollback: " + refusal,
                     {{"layout", layout.ToJson()},
                      {"hint",
                       "Give the agent's OS user write access there, or move the directory; production "
                       "was not touched."}});
  ctx.Info("snapshot",
           "taking snapshot " + snapshot_id + " before upgrading " + upgrade.extname + " " +
               upgrade.from_version + " -> " + upgrade.to_version,
           {{"layout", layout.ToJson()}});
  if (IsDirectory(dir)) RemoveLeftovers(ctx, dir);
  CheckFreeSpace(ctx, *conn, snapshot_id);
  conn.reset();  // idle for the whole copy otherwise
  EnsureDir(dir, 0700);

  // --- base backup ---
  auto started = Clock::now();
  BasebackupReporter reporter(ctx);
  ProcessOptions bb_opt = ToolOptions(config);
  bb_opt.on_stderr_line = [&](const std::string& line) { reporter.OnLine(line); };
  ctx.Info("snapshot", "pg_basebackup into " + partial +
                           (config.backup_max_rate.empty() ? "" : " (max rate " + config.backup_max_rate + ")"));
  const std::string tablespaces_partial = JoinPath(dir, "tablespaces.partial");
  auto bb = RunProcess(BasebackupArgv(config, partial, snapshot_id, layout, tablespaces_partial), bb_opt);
  reporter.Finish();
  double basebackup_s = Seconds(Clock::now() - started);
  if (!bb.Ok()) {
    std::string stderr_text = Join(reporter.messages());
    ProcessResult shown = bb;
    shown.err = stderr_text;
    throw JobFailure(shown.Describe("pg_basebackup"),
                     {{"tool", "pg_basebackup"}, {"exit_code", bb.exit_code}, {"stderr", stderr_text}});
  }
  ctx.Failpoint("snapshot:after_basebackup");

  // --- verification ---
  const char* fp = getenv("SAFE_UPGRADE_FAILPOINT");
  if (fp && std::string(fp) == kCorruptFailpoint) {
    std::string file = CorruptOneFile(partial);
    ctx.Event("snapshot", "warning", "test failpoint " + std::string(kCorruptFailpoint) + ": corrupted " + file);
  }
  auto verify_started = Clock::now();
  auto verify = RunProcess({JoinPath(config.bin_dir, "pg_verifybackup"), partial}, ToolOptions(config));
  double verify_s = Seconds(Clock::now() - verify_started);
  if (!verify.Ok()) {
    std::string stderr_text = Trimmed(verify.err);
    ctx.Event("snapshot", "error",
              "the backup in " + partial + " failed verification; it is kept for inspection and removed by the "
              "next snapshot attempt");
    throw JobFailure(verify.Describe("pg_verifybackup"),
                     {{"tool", "pg_verifybackup"}, {"exit_code", verify.exit_code}, {"stderr", stderr_text}});
  }
  ctx.Progress(0.95);
  ctx.Info("snapshot", "pg_verifybackup: backup verified", {{"verify_s", Round1(verify_s)}});
  ctx.Failpoint("snapshot:after_verify");

  // --- facts ---
  BackupLabelFacts label = ParseBackupLabel(ReadFile(JoinPath(partial, "backup_label")));
  std::string stop_lsn = ParseManifestStopLsn(ReadFile(JoinPath(partial, "backup_manifest")));
  ClusterFacts backup_facts = ReadControlData(config.bin_dir, partial);
  if (backup_facts.system_identifier != served_sysid)
    throw JobFailure("the backup's system identifier " + std::to_string(backup_facts.system_identifier) +
                     " differs from the cluster's " + std::to_string(served_sysid));
  nlohmann::json extensions = nlohmann::json::object();
  {
    auto after = ConnectProduction(config, "safe-upgrade-agent snapshot");
    for (const auto& row : after->Exec("SELECT extname::text, extversion FROM pg_extension ORDER BY 1").rows)
      extensions[row[0].value_or("")] = row[1].value_or("");
  }
  uint64_t size_bytes = TreeSize(partial);
  for (auto& ts : layout.tablespaces) {
    std::string copy = JoinPath(tablespaces_partial, ts.oid);
    if (!IsDirectory(JoinPath(copy, layout.version_dir)))
      throw JobFailure("the backup of tablespace " + ts.oid + " (" + ts.location + ") has no " +
                       layout.version_dir + " in " + copy);
    ts.size_bytes = TreeSize(copy);
    size_bytes += ts.size_bytes;
  }
  double duration_s = Seconds(Clock::now() - started);

  nlohmann::json meta = {{"snapshot_id", snapshot_id},
                         {"upgrade_id", upgrade_id},
                         {"system_identifier", std::to_string(served_sysid)},
                         {"timeline", label.timeline},
                         {"backup_start_lsn", label.start_lsn},
                         {"backup_stop_lsn", stop_lsn},
                         {"size_bytes", size_bytes},
                         {"duration_s", Round1(duration_s)},
                         {"extensions", extensions},
                         {"layout", layout.ToJson()},
                         {"created_at", NowIso8601()},
                         {"verified", true}};

  Publish(dir, partial, data_dir, meta_path, meta, layout);
  ctx.journal().Update(upgrade_id, [&](nlohmann::json& doc) { doc["snapshot_id"] = snapshot_id; });
  ctx.Info("snapshot",
           "snapshot " + snapshot_id + " verified: " + std::to_string(size_bytes / kMiB) + " MB, " +
               label.start_lsn + " to " + stop_lsn + " on timeline " + std::to_string(label.timeline),
           {{"basebackup_s", Round1(basebackup_s)}, {"verify_s", Round1(verify_s)}, {"duration_s", Round1(duration_s)}});

  RunRetention(ctx, snapshot_id);
  return meta;
}

}  // namespace safe_upgrade
