// The test clusters' pgBackRest stanza (ClusterOptions.backend = "pgbackrest"): running
// pgBackRest against it as the server's OS user, and what its repository holds.
#pragma once

#include <string>
#include <vector>

#include "base/process.h"
#include "test_cluster.h"

namespace safe_upgrade::testing {

// Non-empty (the reason) when Debian's pgbackrest is not installed; such a test is skipped,
// never counted as a pass.
std::string PgBackRestUnavailable();
// pgbackrest --config=<sandbox's> --stanza=sandbox <args...>, as the service user.
ProcessResult RunPgBackRest(const TestCluster& c, const std::vector<std::string>& args);
// Whether the stanza's archive holds the file (a segment or a history file).
bool StanzaArchived(const TestCluster& c, const std::string& name);
// The posix repository inside the cluster's root.
std::string StanzaRepoDir(const TestCluster& c);
// The labels of the stanza's backups, oldest first.
std::vector<std::string> StanzaBackupLabels(const TestCluster& c);

}  // namespace safe_upgrade::testing
