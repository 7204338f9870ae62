// The sandbox's pgbackrest backend: a stanza "sandbox" whose repository is DIR/pgbackrest/repo (or
// an object store the caller names), so that a new user and the tests get the backend with one
// command.
#include <sstream>

#include "base/fs_util.h"
#include "base/process.h"
#include "sandbox/sandbox.h"

namespace safe_upgrade {

void WriteSandboxStanzaConfig(const SandboxInfo& info, const std::vector<std::string>& repo_options) {
  const AgentConfig& c = info.agent_config;
  std::string home = JoinPath(info.dir, "pgbackrest");
  for (const char* sub : {"", "log", "lock", "spool"}) EnsureDir(*sub ? JoinPath(home, sub) : home, 0700);
  std::ostringstream conf;
  conf << "# pgBackRest configuration of the safe-upgrade sandbox (stanza \"" << c.backend.stanza << "\")\n"
       << "[global]\n";
  if (repo_options.empty()) {
    EnsureDir(JoinPath(home, "repo"), 0700);
    conf << "repo1-path=" << JoinPath(home, "repo") << "\n";
  }
  for (const auto& line : repo_options) {
    if (line.find('\n') != std::string::npos) throw SandboxError("a repository option holds a line break");
    conf << line << "\n";
  }
  // Two full backups are kept; the incremental ones the snapshots take build on the newest.
  conf << "repo1-retention-full=2\n"
       << "log-path=" << JoinPath(home, "log") << "\n"
       << "lock-path=" << JoinPath(home, "lock") << "\n"
       << "spool-path=" << JoinPath(home, "spool") << "\n"
       << "log-level-file=detail\n"
       << "compress-type=lz4\n"
       << "\n[" << c.backend.stanza << "]\n"
       << "pg1-path=" << info.data_dir << "\n"
       << "pg1-port=" << info.port << "\n"
       << "pg1-socket-path=" << info.socket_dir << "\n"
       << "pg1-user=postgres\n";
  AtomicWriteFile(c.backend.config, conf.str(), 0640);
}

void CreateSandboxStanza(const SandboxInfo& info) {
  const AgentConfig::Backend& b = info.agent_config.backend;
  ProcessOptions opt;
  opt.run_as = info.os_user;
  opt.env["LC_ALL"] = "C";
  opt.timeout = std::chrono::minutes(5);
  // Idempotent: an existing, valid stanza is left as it is.
  auto r = RunProcess({b.binary, "--config=" + b.config, "--stanza=" + b.stanza, "--log-level-console=off",
                       "--log-level-stderr=warn", "stanza-create"},
                      opt);
  if (!r.Ok()) throw SandboxError(r.Describe("pgbackrest stanza-create"));
}

}  // namespace safe_upgrade
