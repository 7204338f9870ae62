// Agent configuration: TOML parsing (toml++), defaults and validation.
#include "base/config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <sstream>

#include "base/fs_util.h"
#include "build_info.h"

namespace safe_upgrade {
namespace {

template <typename T>
void Read(const toml::table& tbl, const std::string& section, const std::string& key, T& into) {
  auto node = tbl[section][key];
  if (!node) return;
  if (auto v = node.template value<T>()) {
    into = *v;
    return;
  }
  throw ConfigError(section + "." + key + ": wrong type");
}

// [[standby]] tables: name (the standby's application_name) and agent (its address).
void ReadStandbys(const toml::table& tbl, AgentConfig& c) {
  auto node = tbl["standby"];
  if (!node) return;
  const toml::array* list = node.as_array();
  if (!list) throw ConfigError("standby: must be an array of tables ([[standby]])");
  // An application_name (Debian's standbys stream as their cluster_name, e.g. "15/main").
  static const std::regex standby_name("[A-Za-z0-9_][A-Za-z0-9_./-]{0,62}");
  for (size_t i = 0; i < list->size(); ++i) {
    const toml::table* entry = (*list)[i].as_table();
    std::string where = "standby[" + std::to_string(i) + "]";
    if (!entry) throw ConfigError(where + ": must be a table ([[standby]])");
    AgentConfig::StandbyAgent standby;
    auto name = (*entry)["name"].value<std::string>();
    auto agent = (*entry)["agent"].value<std::string>();
    if (!name || !std::regex_match(*name, standby_name))
      throw ConfigError(where + ".name: missing or not a standby's application_name (letters, digits, "
                        "'_', '.', '/', '-')");
    if (!agent || agent->empty()) throw ConfigError(where + ".agent: missing (the standby agent's address)");
    for (const auto& seen : c.standbys)
      if (seen.name == *name) throw ConfigError(where + ".name: \"" + *name + "\" is listed twice");
    standby.name = *name;
    standby.agent = *agent;
    c.standbys.push_back(standby);
  }
}

std::string Quote(const std::string& s) {
  std::ostringstream o;
  o << toml::value<std::string>(s);
  return o.str();
}

}  // namespace

std::string AgentConfig::JournalDir() const { return JoinPath(work_dir, "journal"); }
std::string AgentConfig::ClonesDir() const { return JoinPath(work_dir, "clones"); }

AgentConfig ParseAgentConfig(const std::string& toml_text, const std::string& source_path) {
  toml::table tbl;
  try {
    tbl = toml::parse(toml_text, source_path);
  } catch (const toml::parse_error& e) {
    std::ostringstream s;
    s << "invalid TOML in " << source_path << " at line " << e.source().begin.line << ": " << e.description();
    throw ConfigError(s.str());
  }
  AgentConfig c;
  c.source_path = source_path;
  Read(tbl, "cluster", "data_directory", c.data_directory);
  Read(tbl, "cluster", "bin_dir", c.bin_dir);
  Read(tbl, "cluster", "socket_dir", c.socket_dir);
  int64_t port = c.port;
  Read(tbl, "cluster", "port", port);
  c.port = static_cast<int>(port);
  Read(tbl, "cluster", "database", c.database);
  Read(tbl, "cluster", "user", c.db_user);
  Read(tbl, "cluster", "control", c.control);
  Read(tbl, "cluster", "config_file", c.config_file);
  Read(tbl, "cluster", "server_log", c.server_log);
  Read(tbl, "agent", "listen", c.listen);
  Read(tbl, "agent", "snapshot_dir", c.snapshot_dir);
  Read(tbl, "agent", "wal_archive_dir", c.wal_archive_dir);
  Read(tbl, "agent", "work_dir", c.work_dir);
  Read(tbl, "agent", "log_file", c.log_file);
  Read(tbl, "agent", "log_level", c.log_level);
  int64_t retention = c.snapshot_retention, reserve = static_cast<int64_t>(c.disk_reserve_mb),
          job_timeout = c.job_timeout_s;
  Read(tbl, "agent", "snapshot_retention", retention);
  Read(tbl, "agent", "disk_reserve_mb", reserve);
  Read(tbl, "agent", "job_timeout_s", job_timeout);
  c.snapshot_retention = static_cast<int>(retention);
  c.disk_reserve_mb = static_cast<uint64_t>(reserve);
  c.job_timeout_s = static_cast<int>(job_timeout);
  Read(tbl, "agent", "backup_max_rate", c.backup_max_rate);
  Read(tbl, "agent", "allow_root", c.allow_root);
  Read(tbl, "agent", "agent_binary", c.agent_binary);
  Read(tbl, "agent", "snapshot_method", c.snapshot_method);
  if (c.snapshot_method != "auto" && c.snapshot_method != "reflink" && c.snapshot_method != "basebackup")
    throw ConfigError("agent.snapshot_method: \"" + c.snapshot_method +
                      "\" is not one of \"auto\", \"reflink\", \"basebackup\"");
  Read(tbl, "agent", "backup_checkpoint", c.backup_checkpoint);
  if (c.backup_checkpoint != "fast" && c.backup_checkpoint != "spread")
    throw ConfigError("agent.backup_checkpoint: \"" + c.backup_checkpoint +
                      "\" is not one of \"fast\", \"spread\"");
  Read(tbl, "backend", "kind", c.backend.kind);
  if (c.backend.kind != "local" && c.backend.kind != "pgbackrest")
    throw ConfigError("backend.kind: \"" + c.backend.kind + "\" is not one of \"local\", \"pgbackrest\"");
  Read(tbl, "backend", "stanza", c.backend.stanza);
  Read(tbl, "backend", "config", c.backend.config);
  Read(tbl, "backend", "binary", c.backend.binary);
  Read(tbl, "backend", "backup_type", c.backend.backup_type);
  Read(tbl, "backend", "backup_after_success", c.backend.backup_after_success);
  if (c.backend.backup_type != "incr" && c.backend.backup_type != "diff" && c.backend.backup_type != "full")
    throw ConfigError("backend.backup_type: \"" + c.backend.backup_type +
                      "\" is not one of \"incr\", \"diff\", \"full\"");
  Read(tbl, "agent", "role", c.role);
  if (c.role != "primary" && c.role != "standby")
    throw ConfigError("agent.role: \"" + c.role + "\" is not one of \"primary\", \"standby\"");
  ReadStandbys(tbl, c);
  Read(tbl, "patroni", "rest_api", c.patroni.rest_api);
  Read(tbl, "patroni", "ca_file", c.patroni.ca_file);
  Read(tbl, "tls", "ca_file", c.tls_ca_file);
  Read(tbl, "tls", "cert_file", c.tls_cert_file);
  Read(tbl, "tls", "key_file", c.tls_key_file);
  Read(tbl, "tls", "insecure_tcp", c.insecure_tcp);
  if (c.bin_dir.empty()) c.bin_dir = kPgBinDir;
  if (c.socket_dir.empty()) c.socket_dir = "/var/run/postgresql";
  if (c.work_dir.empty() && !c.snapshot_dir.empty()) c.work_dir = JoinPath(Dirname(c.snapshot_dir), "work");
  return c;
}

void ValidateAgentConfig(const AgentConfig& c, bool data_directory_may_be_missing) {
  auto require = [](const std::string& value, const char* key) {
    if (value.empty()) throw ConfigError(std::string(key) + ": missing (required)");
  };
  require(c.data_directory, "cluster.data_directory");
  // While a journaled rollback has moved it aside, a missing data directory is expected: the
  // rollback puts a restored one in its place.
  bool moved_aside = data_directory_may_be_missing && !PathExists(c.data_directory);
  if (!moved_aside) {
    if (!IsDirectory(c.data_directory))
      throw ConfigError("cluster.data_directory: \"" + c.data_directory +
                        "\" does not exist or is not a directory");
    if (!PathExists(JoinPath(c.data_directory, "PG_VERSION")))
      throw ConfigError("cluster.data_directory: \"" + c.data_directory +
                        "\" is not a PostgreSQL data directory (no PG_VERSION file)");
  }
  if (!PathExists(JoinPath(c.bin_dir, "pg_ctl")))
    throw ConfigError("cluster.bin_dir: no pg_ctl in \"" + c.bin_dir + "\"");
  if (c.port <= 0 || c.port > 65535)
    throw ConfigError("cluster.port: " + std::to_string(c.port) + " is not a port");
  require(c.listen, "agent.listen");
  require(c.snapshot_dir, "agent.snapshot_dir");
  // With pgBackRest the stanza's archive is the one a rollback replays.
  if (!c.backend.IsPgBackRest()) require(c.wal_archive_dir, "agent.wal_archive_dir");
  if (c.snapshot_retention < 1) throw ConfigError("agent.snapshot_retention: must be at least 1");
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" && c.log_level != "error")
    throw ConfigError("agent.log_level: must be one of debug, info, warn, error");
  if (c.control != "pg_ctl" && c.control.rfind("pg_ctlcluster ", 0) != 0 &&
      c.control.rfind("systemd ", 0) != 0)
    throw ConfigError(
        "cluster.control: must be \"pg_ctl\", \"pg_ctlcluster <version> <name>\" or \"systemd <unit>\"");
  if (!c.agent_binary.empty() && (c.agent_binary[0] != '/' || access(c.agent_binary.c_str(), X_OK) != 0))
    throw ConfigError("agent.agent_binary: \"" + c.agent_binary +
                      "\" is not an absolute path to an executable");
  if (c.backend.IsPgBackRest()) {
    // Passed to pgBackRest as one argument each, never through a shell; still, only the
    // characters pgBackRest allows in a stanza name.
    static const std::regex stanza_name("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    if (c.backend.stanza.empty())
      throw ConfigError("backend.stanza: missing (required with kind = \"pgbackrest\")");
    if (!std::regex_match(c.backend.stanza, stanza_name))
      throw ConfigError("backend.stanza: \"" + c.backend.stanza +
                        "\" is not a stanza name (letters, digits, '_', '.', '-')");
    if (!c.backend.config.empty() && (c.backend.config[0] != '/' || !PathExists(c.backend.config)))
      throw ConfigError("backend.config: \"" + c.backend.config +
                        "\" is not an absolute path to an existing file");
    if (c.backend.binary.empty() || c.backend.binary[0] == '-')
      throw ConfigError("backend.binary: \"" + c.backend.binary + "\" is not a program");
  } else if (!c.backend.stanza.empty() || !c.backend.config.empty()) {
    throw ConfigError("backend.stanza and backend.config are for kind = \"pgbackrest\"; backend.kind is \"" +
                      c.backend.kind + "\"");
  }
  if (!c.patroni.rest_api.empty()) {
    static const std::regex url(R"(https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}/?)");
    if (!std::regex_match(c.patroni.rest_api, url))
      throw ConfigError("patroni.rest_api: \"" + c.patroni.rest_api +
                        "\" is not http(s)://host:port (Patroni's restapi.listen, nothing after the port)");
    if (c.IsStandby())
      throw ConfigError("patroni.rest_api: only the primary's agent pauses Patroni; remove it from a standby's");
  }
  if (!c.patroni.ca_file.empty() && (c.patroni.ca_file[0] != '/' || !PathExists(c.patroni.ca_file)))
    throw ConfigError("patroni.ca_file: \"" + c.patroni.ca_file + "\" is not an absolute path to an existing file");
  if (c.IsStandby() && !c.standbys.empty())
    throw ConfigError("standby: a standby's agent (agent.role = \"standby\") lists no standbys of its own");
  for (const auto& standby : c.standbys) {
    bool unix_address = standby.agent.rfind("unix:/", 0) == 0;
    if (!unix_address && c.tls_ca_file.empty() && !c.insecure_tcp)
      throw ConfigError("standby \"" + standby.name + "\": agent \"" + standby.agent +
                        "\" is a TCP address, which needs tls.ca_file, tls.cert_file and tls.key_file");
  }
  bool tcp = c.listen.rfind("unix:", 0) != 0;
  if (tcp && !c.insecure_tcp && (c.tls_ca_file.empty() || c.tls_cert_file.empty() || c.tls_key_file.empty()))
    throw ConfigError("agent.listen: TCP listening requires tls.ca_file, tls.cert_file and tls.key_file");
}

AgentConfig LoadAgentConfig(const std::string& path) {
  std::string text;
  try {
    text = ReadFile(path);
  } catch (const std::exception& e) {
    throw ConfigError(e.what());
  }
  AgentConfig c = ParseAgentConfig(text, path);
  ValidateAgentConfig(c);
  return c;
}

std::string ResolveStartedFrom(const std::string& argv0) {
  if (argv0.empty()) return "";
  if (argv0.find('/') != std::string::npos) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(argv0, ec);
    return ec ? "" : abs.lexically_normal().string();
  }
  const char* path = getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty() || dir[0] != '/') continue;
    std::string candidate = JoinPath(dir, argv0);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string RenderAgentConfig(const AgentConfig& c) {
  std::ostringstream o;
  o << "# safe-upgrade-agent configuration (see docs/configuration.md)\n\n[cluster]\n"
    << "data_directory = " << Quote(c.data_directory) << "\n"
    << "bin_dir = " << Quote(c.bin_dir) << "\n"
    << "socket_dir = " << Quote(c.socket_dir) << "\n"
    << "port = " << c.port << "\n"
    << "database = " << Quote(c.database) << "\n";
  if (!c.db_user.empty()) o << "user = " << Quote(c.db_user) << "\n";
  o << "control = " << Quote(c.control) << "\n";
  if (!c.config_file.empty()) o << "config_file = " << Quote(c.config_file) << "\n";
  if (!c.server_log.empty()) o << "server_log = " << Quote(c.server_log) << "\n";
  o << "\n[agent]\n"
    << "listen = " << Quote(c.listen) << "\n"
    << "snapshot_dir = " << Quote(c.snapshot_dir) << "\n"
    << (c.wal_archive_dir.empty() ? "" : "wal_archive_dir = " + Quote(c.wal_archive_dir) + "\n")
    << "work_dir = " << Quote(c.work_dir) << "\n";
  if (!c.log_file.empty()) o << "log_file = " << Quote(c.log_file) << "\n";
  o << "log_level = " << Quote(c.log_level) << "\n"
    << "snapshot_retention = " << c.snapshot_retention << "\n"
    << "disk_reserve_mb = " << c.disk_reserve_mb << "\n";
  if (!c.backup_max_rate.empty()) o << "backup_max_rate = " << Quote(c.backup_max_rate) << "\n";
  o << "snapshot_method = " << Quote(c.snapshot_method) << "\n";
  o << "backup_checkpoint = " << Quote(c.backup_checkpoint) << "\n";
  if (c.allow_root) o << "allow_root = true\n";
  if (!c.agent_binary.empty()) o << "agent_binary = " << Quote(c.agent_binary) << "\n";
  if (c.IsStandby()) o << "role = \"standby\"\n";
  if (c.backend.IsPgBackRest()) {
    o << "\n[backend]\nkind = \"pgbackrest\"\nstanza = " << Quote(c.backend.stanza) << "\n";
    if (!c.backend.config.empty()) o << "config = " << Quote(c.backend.config) << "\n";
    if (c.backend.binary != "pgbackrest") o << "binary = " << Quote(c.backend.binary) << "\n";
    o << "backup_type = " << Quote(c.backend.backup_type) << "\n";
    if (!c.backend.backup_after_success) o << "backup_after_success = false\n";
  }
  if (!c.tls_ca_file.empty() || c.insecure_tcp) {
    o << "\n[tls]\n";
    if (!c.tls_ca_file.empty())
      o << "ca_file = " << Quote(c.tls_ca_file) << "\ncert_file = " << Quote(c.tls_cert_file)
        << "\nkey_file = " << Quote(c.tls_key_file) << "\n";
    if (c.insecure_tcp) o << "insecure_tcp = true\n";
  }
  if (!c.patroni.rest_api.empty()) {
    o << "\n[patroni]\nrest_api = " << Quote(c.patroni.rest_api) << "\n";
    if (!c.patroni.ca_file.empty()) o << "ca_file = " << Quote(c.patroni.ca_file) << "\n";
  }
  for (const auto& standby : c.standbys)
    o << "\n[[standby]]\nname = " << Quote(standby.name) << "\nagent = " << Quote(standby.agent) << "\n";
  return o.str();
}

}  // namespace safe_upgrade
