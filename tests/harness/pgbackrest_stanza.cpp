// The test clusters' pgBackRest stanza.
#include "pgbackrest_stanza.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs_util.h"

namespace safe_upgrade::testing {

std::string PgBackRestUnavailable() {
  for (const char* p : {"/usr/bin/pgbackrest", "/usr/local/bin/pgbackrest"})
    if (access(p, X_OK) == 0) return "";
  return "pgbackrest is not installed (Debian package pgbackrest; `make deps` installs it as root)";
}

ProcessResult RunPgBackRest(const TestCluster& c, const std::vector<std::string>& args) {
  const AgentConfig::Backend& b = c.info().agent_config.backend;
  std::vector<std::string> argv = {b.binary, "--config=" + b.config, "--stanza=" + b.stanza,
                                   "--log-level-console=off", "--log-level-stderr=warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  return c.RunAsServiceUser(argv);
}

bool StanzaArchived(const TestCluster& c, const std::string& name) {
  std::string dest = JoinPath(c.ScratchDir("archive-get"), name);
  return RunPgBackRest(c, {"archive-get", name, dest}).Ok();
}

std::string StanzaRepoDir(const TestCluster& c) { return JoinPath(c.info().dir, "pgbackrest/repo"); }

std::vector<std::string> StanzaBackupLabels(const TestCluster& c) {
  std::vector<std::string> out;
  auto r = RunPgBackRest(c, {"--output=json", "info"});
  if (!r.Ok()) return out;
  for (const auto& stanza : nlohmann::json::parse(r.out))
    for (const auto& b : stanza.value("backup", nlohmann::json::array())) out.push_back(b.value("label", ""));
  return out;
}

}  // namespace safe_upgrade::testing
