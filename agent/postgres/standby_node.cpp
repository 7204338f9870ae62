// A standby on its own host (standby_node.h).
#include "postgres/standby_node.h"

#include <libpq-fe.h>

#include <filesystem>
#include <thread>

#include "base/fs_util.h"
#include "base/process.h"
#include "postgres/catalog.h"

namespace safe_upgrade {
namespace {

// What makes a data directory this standby rather than a copy of its primary.
constexpr const char* kStandbyFiles[] = {"postgresql.conf", "postgresql.auto.conf", "pg_hba.conf",
                                         "pg_ident.conf", "standby.signal"};

int IntOr(const std::optional<std::string>& value) { return value && !value->empty() ? std::stoi(*value) : 0; }

}  // namespace

StandbyState ReadStandbyState(PgConn& standby) {
  StandbyState s;
  s.in_recovery = standby.Exec("SELECT pg_catalog.pg_is_in_recovery()::text").Scalar() == "true";
  s.primary_conninfo = standby.Exec("SELECT pg_catalog.current_setting('primary_conninfo')").Scalar();
  s.primary_slot_name = standby.Exec("SELECT pg_catalog.current_setting('primary_slot_name')").Scalar();
  auto receiver = standby.Exec("SELECT status, received_tli::text FROM pg_catalog.pg_stat_wal_receiver");
  if (!receiver.Empty()) {
    s.receiver_status = receiver.rows[0][0].value_or("");
    s.received_tli = IntOr(receiver.rows[0][1]);
  }
  s.checkpoint_tli = IntOr(standby.Exec("SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint()").rows[0][0]);
  return s;
}

std::string PrimaryQueryConnInfo(const std::string& primary_conninfo, const std::string& user,
                                 const std::string& database) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(primary_conninfo.c_str(), &error);
  if (!options) {
    std::string why = error ? error : "out of memory";
    PQfreemem(error);
    throw std::runtime_error("cannot parse the standby's primary_conninfo: " + why);
  }
  std::string own_user;
  for (PQconninfoOption* o = options; o->keyword; ++o)
    if (std::string(o->keyword) == "user" && o->val) own_user = o->val;
  const bool same_user = user.empty() || user == own_user;
  std::string out;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    std::string keyword = o->keyword;
    if (!o->val || keyword == "dbname" || keyword == "replication" || keyword == "user" ||
        (keyword == "password" && !same_user))
      continue;
    out += keyword + "=" + QuoteConnValue(o->val) + " ";
  }
  PQconninfoFree(options);
  if (!same_user) out += "user=" + QuoteConnValue(user) + " ";
  else if (!own_user.empty()) out += "user=" + QuoteConnValue(own_user) + " ";
  return out + "dbname=" + QuoteConnValue(database);
}

int PrimaryTimeline(const std::string& conninfo) {
  PgConn primary(conninfo, std::chrono::seconds(5));
  std::string file = primary.Exec("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn())").Scalar();
  return static_cast<int>(std::stoul(file.substr(0, 8), nullptr, 16));
}

void SaveStandbySettings(const std::string& data_dir, const std::string& into) {
  EnsureDir(into, 0700);
  for (const char* name : kStandbyFiles) {
    std::string from = JoinPath(data_dir, name);
    std::string to = JoinPath(into, name);
    if (PathExists(from))
      std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
    else
      std::filesystem::remove(to);
  }
  FsyncPath(into);
}

void RestoreStandbySettings(const std::string& saved, const std::string& data_dir) {
  for (const char* name : kStandbyFiles) {
    std::string from = JoinPath(saved, name);
    if (!PathExists(from)) continue;
    std::string content = ReadFile(from);
    AtomicWriteFile(JoinPath(data_dir, name), content, 0600);
  }
  // Whatever the saved files said, the node is a standby.
  std::string signal = JoinPath(data_dir, "standby.signal");
  if (!PathExists(signal)) AtomicWriteFile(signal, "", 0600);
}

void RewindStandby(const AgentConfig& config, const std::string& source_conninfo) {
  ProcessOptions opt;
  opt.timeout = std::chrono::seconds(std::max(60, config.job_timeout_s));
  auto r = RunProcess({JoinPath(config.bin_dir, "pg_rewind"), "--target-pgdata=" + config.data_directory,
                       "--source-server=" + source_conninfo},
                      opt);
  if (!r.Ok()) throw std::runtime_error(r.Describe("pg_rewind"));
}

void RecloneStandby(const AgentConfig& config, const std::string& primary_conninfo, const std::string& aside) {
  if (PathExists(JoinPath(config.data_directory, "pg_tblspc")) &&
      !std::filesystem::is_empty(JoinPath(config.data_directory, "pg_tblspc")))
    throw std::runtime_error("the standby has tablespaces, which a re-clone in place cannot map; re-clone it by hand");
  if (PathExists(aside)) throw std::runtime_error(aside + " exists already; move it away first");
  DurableRename(config.data_directory, aside);
  ProcessOptions opt;
  opt.timeout = std::chrono::seconds(std::max(60, config.job_timeout_s));
  auto r = RunProcess({JoinPath(config.bin_dir, "pg_basebackup"), "--pgdata=" + config.data_directory,
                       "--dbname=" + primary_conninfo, "--wal-method=stream", "--checkpoint=fast",
                       "--no-password"},
                      opt);
  if (!r.Ok()) throw std::runtime_error(r.Describe("pg_basebackup"));
  SyncTree(config.data_directory);
}

bool WaitUntilStreaming(const AgentConfig& config, int primary_timeline, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      auto conn = ConnectProduction(config, "safe-upgrade-agent resync");
      if (ReadStandbyState(*conn).Streaming(primary_timeline)) return true;
    } catch (const std::exception&) {
      // Still starting up.
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace safe_upgrade
