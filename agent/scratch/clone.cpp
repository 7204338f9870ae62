// Dry-run clones: copy, isolate, start, verify isolation, tear down.
#include "scratch/clone.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/copy_progress.h"
#include "base/fs_util.h"
#include "base/process.h"
#include "postgres/catalog.h"
#include "postgres/cluster.h"
#include "postgres/pgbackrest.h"
#include "postgres/socket_only.h"
#include "postgres/tablespaces.h"
#include "storage/reflink.h"

namespace fs = std::filesystem;

namespace safe_upgrade {
namespace {

using nlohmann::json;

// sun_path is 108 bytes; the socket file is "<dir>/.s.PGSQL.<port>".
constexpr size_t kMaxSocketDirLength = 90;

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0600) {
  AtomicWriteFile(path, text, mode);
}

// pg_wal and tablespaces may be symlinks in a snapshot; a clone that followed them would write
// into someone else's directory, so they become real copies inside the clone.
void MaterializeLinks(const std::string& clone_dir, const std::string& data_dir,
                      const std::string& snapshot_dir) {
  if (fs::is_symlink(JoinPath(data_dir, "pg_wal")))
    MoveWalOut(data_dir, JoinPath(clone_dir, "pg_wal"), false);
  for (const auto& ts : ReadExternalLayout(data_dir, "").tablespaces)
    if (!PathInside(ts.location, snapshot_dir))
      throw JobFailure("the snapshot's tablespace " + ts.oid + " points to " + ts.location +
                       ", outside the snapshot; a clone would write into it, so the dry run refuses");
  CopyLinkedTablespaces(
      data_dir, [&](const std::string& oid) { return JoinPath(JoinPath(clone_dir, "tablespaces"), oid); },
      false);
}

}  // namespace

Clone::Clone(JobContext& ctx, std::string snapshot_id, std::string source_data_dir)
    : ctx_(ctx), snapshot_id_(std::move(snapshot_id)), source_data_dir_(std::move(source_data_dir)) {
  dir_ = JoinPath(ctx_.config().ClonesDir(), kClonePrefix + std::to_string(ctx_.upgrade_id()));
  data_dir_ = JoinPath(dir_, "data");
  log_file_ = JoinPath(dir_, "postgres.log");
}

Clone::~Clone() { Teardown(); }

std::string Clone::LogTail(size_t max_bytes) const { return FileTail(log_file_, max_bytes); }

json Clone::ToJson() const {
  return {
      {"port", port_}, {"data_dir", data_dir_}, {"socket_dir", socket_dir_}, {"snapshot_id", snapshot_id_}};
}

void Clone::Create(double progress_from, double progress_to) {
  const AgentConfig& config = ctx_.config();
  EnsureDir(config.ClonesDir(), 0700);
  // A clone left by an earlier attempt of this upgrade is scratch, like this one.
  if (PathExists(dir_)) DestroyClone(ctx_.upgrade_id(), config, dir_, "");

  port_ = FindFreePort();
  socket_dir_ = JoinPath(dir_, "run");
  if (socket_dir_.size() > kMaxSocketDirLength) {
    std::string tmpl = std::string(kTmpSocketPrefix) + "XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("could not create a socket directory for the clone");
    socket_dir_ = tmpl;
  }

  // Journaled before anything exists on disk, so a crash at any later point leaves a clone that
  // the next agent start finds and removes.
  JournaledClone entry{dir_, data_dir_, socket_dir_, port_, ctx_.job_id(), snapshot_id_, NowIso8601()};
  ctx_.journal().Update(ctx_.upgrade_id(), [&](JournalDoc& doc) { doc.clones.push_back(entry); });
  journaled_ = true;

  json meta = source_data_dir_.empty() ? LoadSnapshotMeta(config, snapshot_id_) : json::object();
  if (IsPgBackRestSnapshot(meta)) {
    RestoreFromStanza(meta, progress_to);
  } else {
    CopySnapshot(progress_from, progress_to);
    MaterializeLinks(dir_, data_dir_, SnapshotDir(config, snapshot_id_));
  }
  WriteSettings();
}

// Refuses when the clone's needed bytes would eat into the reserve; then makes its directories.
void Clone::MakeRoom(uint64_t needed) {
  const AgentConfig& config = ctx_.config();
  uint64_t reserve = config.disk_reserve_mb * 1024 * 1024;
  uint64_t free_bytes = FreeBytes(config.ClonesDir());
  if (free_bytes < needed + reserve)
    throw JobFailure("not enough free space for the dry-run clone in " + config.ClonesDir() + ": it needs " +
                     Megabytes(needed) + " plus the reserve of " + Megabytes(reserve) + ", and " +
                     Megabytes(free_bytes) + " are free");
  EnsureDir(dir_, 0700);
  if (PathInside(socket_dir_, dir_)) EnsureDir(socket_dir_, 0700);
}

// A snapshot that is a pgBackRest backup is restored from the stanza's repository straight into
// the clone: no copy of the cluster lies on this host beforehand.
void Clone::RestoreFromStanza(const json& meta, double progress_to) {
  const AgentConfig& config = ctx_.config();
  uint64_t total = meta.value("size_bytes", uint64_t{0});
  MakeRoom(total);
  std::string label = meta["pgbackrest"].value("label", "");
  ctx_.Info("clone", "restoring pgBackRest backup " + label + " (" + Megabytes(total) + ") into " + data_dir_,
            {{"snapshot_id", snapshot_id_}, {"bytes", total}, {"clone_dir", dir_}, {"label", label}});
  auto started = std::chrono::steady_clock::now();
  try {
    RestorePgBackRestSnapshot(config, meta, data_dir_);
  } catch (const PgBackRestError& e) {
    throw JobFailure(std::string("could not restore the dry-run clone: ") + e.what() +
                     "; production is untouched");
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ctx_.Progress(progress_to);
  ctx_.Info("clone", "restored " + Megabytes(total) + " in " + std::to_string(seconds).substr(0, 5) + " s",
            {{"bytes", total}, {"duration_s", seconds}});
}

void Clone::CopySnapshot(double progress_from, double progress_to) {
  const AgentConfig& config = ctx_.config();
  std::string source = source_data_dir_.empty() ? SnapshotDataDir(config, snapshot_id_) : source_data_dir_;
  if (!IsDirectory(source))
    throw JobFailure("snapshot " + snapshot_id_ + " has no data directory (" + source + ")");
  // The snapshot's tablespaces are copied into the clone too.
  uint64_t total = TreeSize(source) + LinkedTablespaceBytes(source);
  // A copy that shares the snapshot's extents takes no data blocks until the clone writes.
  MakeRoom(CopiesShareExtents(source, config.ClonesDir()) ? 0 : total);
  ctx_.Info("clone", "copying snapshot " + snapshot_id_ + " (" + Megabytes(total) + ") into " + data_dir_,
            {{"snapshot_id", snapshot_id_}, {"bytes", total}, {"clone_dir", dir_}});

  double seconds = CopyTreeReporting(ctx_, "clone", source, data_dir_, total, progress_from, progress_to);
  ctx_.Info("clone", "copied " + Megabytes(total) + " in " + std::to_string(seconds).substr(0, 5) + " s",
            {{"bytes", total}, {"duration_s", seconds}});
}

void Clone::WriteSettings() {
  const AgentConfig& config = ctx_.config();
  // Signal files would make the clone a standby (following production, or waiting forever);
  // without them the backup_label alone recovers it to consistency as a primary.
  for (const char* f : {"standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"}) {
    std::string p = JoinPath(data_dir_, f);
    if (PathExists(p)) fs::remove(p);
  }

  std::string conf = JoinPath(data_dir_, "postgresql.conf");
  if (PathExists(conf)) {
    WriteText(conf, SanitizeCopiedConf(ReadFile(conf), ""));
  } else if (!config.config_file.empty() && PathExists(config.config_file)) {
    // Debian-style layout: the configuration lives outside the data directory.
    WriteText(conf, SanitizeCopiedConf(ReadFile(config.config_file), Dirname(config.config_file)));
  } else {
    WriteText(conf, "# safe-upgrade dry-run clone: production's configuration was not available\n");
  }
  // Only the agent's OS user can reach the clone's socket (0700 directory, no TCP), so trust is
  // safe here, and it does not depend on passwords the agent may not have.
  std::string hba = JoinPath(dir_, "pg_hba.conf");
  std::string ident = JoinPath(dir_, "pg_ident.conf");
  WriteText(hba, "# safe-upgrade dry-run clone: unix socket in a 0700 directory only\nlocal all all trust\n");
  WriteText(ident, "");

  auto socket_only = SocketOnlySettings(port_, socket_dir_);
  std::vector<std::pair<std::string, std::string>> settings(socket_only.begin(), socket_only.end());
  settings.insert(
      settings.end(),
      {
          {"unix_socket_permissions", "0700"},
          {"hba_file", ConfQuote(hba)},
          {"ident_file", ConfQuote(ident)},
          // Never archive into production's WAL archive, never follow or restore from anything.
          {"archive_mode", "off"},
          {"archive_command", "''"},
          {"archive_library", "''"},
          {"restore_command", "''"},
          {"primary_conninfo", "''"},
          {"primary_slot_name", "''"},
          // A primary with synchronous standbys configured would wait forever at COMMIT.
          {"synchronous_standby_names", "''"},
          // The scheduler must not act in the clone, nor reach the real agent.
          {"safe_upgrade.enabled", "off"},
          {"safe_upgrade.agent_address", ConfQuote("unix:" + JoinPath(dir_, "no-agent.sock"))},
          // Scratch that shares the host with production: small, quiet, no durability.
          {"shared_buffers", "'128MB'"},
          {"huge_pages", "'off'"},
          {"autovacuum", "off"},
          {"fsync", "off"},
          {"full_page_writes", "off"},
          {"synchronous_commit", "off"},
          {"ssl", "off"},
          {"logging_collector", "off"},
          {"log_destination", "'stderr'"},
          {"cluster_name", ConfQuote("safe-upgrade dry run " + std::to_string(ctx_.upgrade_id()))},
      });
  std::string auto_conf = JoinPath(data_dir_, "postgresql.auto.conf");
  std::string text = ReadFileOr(auto_conf);
  if (!text.empty() && text.back() != '\n') text += "\n";
  // Appended last, so these win over anything production had set with ALTER SYSTEM.
  text +=
      "# --- safe-upgrade dry-run clone settings (upgrade " + std::to_string(ctx_.upgrade_id()) + ") ---\n";
  for (const auto& [k, v] : settings) text += k + " = " + v + "\n";
  WriteText(auto_conf, text);
}

void Clone::Start() {
  const AgentConfig& config = ctx_.config();
  ServerControl server(config.bin_dir, data_dir_, "pg_ctl", "", log_file_);
  server.LowPriority();
  auto started = std::chrono::steady_clock::now();
  try {
    server.Start({}, std::chrono::seconds(std::max(60, config.job_timeout_s)));
  } catch (const std::exception& e) {
    throw JobFailure(
        "the dry-run clone did not start: " + std::string(e.what()) + "; its log ends with:\n" + LogTail(),
        {{"clone", ToJson()}});
  }
  double seconds =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started)
          .count() /
      1000.0;
  ctx_.Info("clone",
            "clone started on port " + std::to_string(port_) + " (socket " + socket_dir_ +
                "), recovered to consistency in " + std::to_string(seconds).substr(0, 5) + " s",
            ToJson());
}

std::unique_ptr<PgConn> Clone::Connect(const std::string& application_name,
                                       const std::string& datname) const {
  const AgentConfig& config = ctx_.config();
  return std::make_unique<PgConn>(ConnInfo(socket_dir_, port_, datname.empty() ? config.database : datname,
                                           config.db_user, application_name));
}

json Clone::VerifyIsolation() {
  for (const char* f : {"standby.signal", "recovery.signal"})
    if (PathExists(JoinPath(data_dir_, f)))
      throw JobFailure(std::string("the dry-run clone is not isolated: it has ") + f, {{"clone", ToJson()}});
  auto conn = Connect("safe-upgrade-agent dryrun-check");
  auto r = conn->Exec(
      "SELECT n, pg_catalog.current_setting(n, true) FROM unnest($1::text[]) AS n",
      {"{archive_mode,archive_command,archive_library,restore_command,primary_conninfo,listen_addresses,port,"
       "unix_socket_directories,synchronous_standby_names,safe_upgrade.enabled,data_directory}"});
  json seen = json::object();
  for (const auto& row : r.rows) seen[*row[0]] = row[1] ? json(*row[1]) : json(nullptr);
  seen["in_recovery"] = conn->Exec("SELECT pg_catalog.pg_is_in_recovery()::text").Scalar();

  auto expect = [&](const std::string& name, std::vector<std::string> allowed) {
    std::string v = seen[name].is_string() ? seen[name].get<std::string>() : "(unset)";
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
      throw JobFailure("the dry-run clone is not isolated: " + name + " is \"" + v + "\", expected \"" +
                           allowed[0] + "\"; production is untouched",
                       {{"clone", ToJson()}, {"settings", seen}});
  };
  expect("archive_mode", {"off"});
  // With archiving off, SHOW archive_command says "(disabled)".
  expect("archive_command", {"", "(disabled)"});
  expect("archive_library", {""});
  expect("restore_command", {""});
  expect("primary_conninfo", {""});
  expect("listen_addresses", {""});
  expect("port", {std::to_string(port_)});
  expect("unix_socket_directories", {socket_dir_});
  expect("synchronous_standby_names", {""});
  expect("safe_upgrade.enabled", {"off"});
  expect("data_directory", {data_dir_});
  expect("in_recovery", {"false"});
  return seen;
}

void Clone::Teardown() {
  if (port_ == 0 && !journaled_) return;
  try {
    DestroyClone(ctx_.upgrade_id(), ctx_.config(), dir_, socket_dir_);
  } catch (const std::exception& e) {
    spdlog::error("upgrade {}: could not remove the dry-run clone {}: {}", ctx_.upgrade_id(), dir_, e.what());
    return;  // stays journaled, so the next agent start tries again
  }
  if (journaled_) {
    try {
      ctx_.journal().Update(ctx_.upgrade_id(), [&](JournalDoc& doc) {
        std::vector<JournaledClone> kept;
        for (const auto& c : doc.clones)
          if (c.path != dir_) kept.push_back(c);
        doc.clones = kept;
      });
      journaled_ = false;
      ctx_.Info("clone", "clone on port " + std::to_string(port_) + " stopped and removed");
    } catch (const std::exception& e) {
      spdlog::error("upgrade {}: could not update the journal after removing clone {}: {}", ctx_.upgrade_id(),
                    dir_, e.what());
    }
  }
  port_ = 0;
}

}  // namespace safe_upgrade
