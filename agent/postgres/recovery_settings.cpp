// Recovery settings block in postgresql.auto.conf.
#include "postgres/recovery_settings.h"

#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "base/fs_util.h"
#include "base/process.h"
#include "postgres/cluster.h"
#include "postgres/pgbackrest.h"

namespace safe_upgrade {
namespace {

constexpr const char* kRecoveryBegin = "# --- safe-upgrade rollback recovery settings: begin ---";
constexpr const char* kRecoveryEnd = "# --- safe-upgrade rollback recovery settings: end ---";

}  // namespace

std::string RestoreCommandFor(const AgentConfig& config, const std::string& data_dir) {
  if (config.backend.IsPgBackRest()) return PgBackRest(config).RestoreCommand(data_dir);
  if (config.agent_binary.empty())
    throw std::runtime_error(
        "the agent's own path is unknown (agent.agent_binary); cannot write restore_command");
  return ShellQuote(config.agent_binary) + " wal-fetch --config " + ShellQuote(config.source_path) + " %f %p";
}

void WriteRecoveryBlock(const AgentConfig& config, const std::string& data_dir,
                        const RecoveryTarget& target) {
  std::string auto_conf = JoinPath(data_dir, "postgresql.auto.conf");
  std::string text = PathExists(auto_conf) ? ReadFile(auto_conf) : "";
  auto begin = text.find(kRecoveryBegin);
  if (begin != std::string::npos) text.erase(begin);
  if (!text.empty() && text.back() != '\n') text += "\n";
  std::string restore_command = RestoreCommandFor(config, data_dir);
  std::ostringstream s;
  s << kRecoveryBegin << "\n"
    << "restore_command = " << ConfQuote(restore_command) << "\n"
    << "recovery_target_name = " << ConfQuote(target.restore_point) << "\n"
    << "recovery_target_action = " << ConfQuote(target.action) << "\n"
    << "recovery_target_timeline = '" << target.timeline << "'\n"
    << kRecoveryEnd << "\n";
  text += s.str();
  AtomicWriteFile(auto_conf, text, 0600);
}

std::optional<std::string> ArchivedFileText(const AgentConfig& config, const std::string& name) {
  if (config.backend.IsPgBackRest()) {
    std::string tmp = JoinPath(config.work_dir, ".archived-" + name);
    if (!PgBackRest(config).ArchiveGet(name, tmp)) return std::nullopt;
    std::string text = ReadFile(tmp);
    std::remove(tmp.c_str());
    return text;
  }
  std::string path = JoinPath(config.wal_archive_dir, name);
  if (!PathExists(path)) return std::nullopt;
  return ReadFile(path);
}

const std::vector<std::string>& RecoverySettingNames() {
  static const std::vector<std::string> names = {"restore_command", "recovery_target_name",
                                                 "recovery_target_action", "recovery_target_timeline"};
  return names;
}

}  // namespace safe_upgrade
