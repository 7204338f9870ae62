// Recovery settings block in postgresql.auto.conf.
#include "postgres/recovery_settings.h"

#include <sstream>
#include <stdexcept>

#include "base/fs_util.h"
#include "base/process.h"
#include "postgres/cluster.h"

namespace safe_upgrade {
namespace {

constexpr const char* kRecoveryBegin = "# --- safe-upgrade rollback recovery settings: begin ---";
constexpr const char* kRecoveryEnd = "# --- safe-upgrade rollback recovery settings: end ---";

}  // namespace

void WriteRecoveryBlock(const AgentConfig& config, const std::string& data_dir,
                        const RecoveryTarget& target) {
  std::string auto_conf = JoinPath(data_dir, "postgresql.auto.conf");
  std::string text = PathExists(auto_conf) ? ReadFile(auto_conf) : "";
  auto begin = text.find(kRecoveryBegin);
  if (begin != std::string::npos) text.erase(begin);
  if (!text.empty() && text.back() != '\n') text += "\n";
  if (config.agent_binary.empty())
    throw std::runtime_error(
        "the agent's own path is unknown (agent.agent_binary); cannot write restore_command");
  std::string restore_command =
      ShellQuote(config.agent_binary) + " wal-fetch --config " + ShellQuote(config.source_path) + " %f %p";
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

const std::vector<std::string>& RecoverySettingNames() {
  static const std::vector<std::string> names = {"restore_command", "recovery_target_name",
                                                 "recovery_target_action", "recovery_target_timeline"};
  return names;
}

}  // namespace safe_upgrade
