// Test harness: a cluster in Debian's layout, made by pg_createcluster (configuration, pg_hba.conf
// and pg_ident.conf in /etc/postgresql/15/NAME, data in /var/lib/postgresql/15/NAME, none of them
// in the data directory) and controlled with pg_ctlcluster, served by an agent whose files live in
// a sandbox-style directory. TestCluster builds on it with ClusterOptions::debian_cluster.
#pragma once

#include <string>

#include "sandbox/sandbox.h"

namespace safe_upgrade::testing {

struct DebianCluster {
  std::string version = "15";
  std::string name;      // unique per test cluster
  std::string log_file;  // where pg_ctlcluster sends the server's log
  std::string ConfigDir() const { return "/etc/postgresql/" + version + "/" + name; }
  std::string DataDir() const { return "/var/lib/postgresql/" + version + "/" + name; }
  std::string Control() const { return "pg_ctlcluster " + version + " " + name; }
};

// Why Debian clusters cannot be made here ("" when they can): pg_createcluster writes to /etc and
// /var/lib/postgresql, so it needs root and Debian's postgresql-common.
std::string DebianClustersUnavailable();

// Creates the cluster on a free port, with the agent's settings (WAL archiving through its
// wal-push, the extension preloaded) in conf.d/safe_upgrade.conf as the README says, an agent in
// dir with control = "pg_ctlcluster 15 NAME" and cluster.config_file in /etc, and starts both. The
// cluster's pg_hba.conf lets root connect as postgres (peer, through a pg_ident.conf map), as the
// tests run as root. On failure it drops what it made and throws.
SandboxInfo CreateDebianCluster(const std::string& dir, const SandboxOptions& options,
                                DebianCluster& cluster);

// A streaming standby of primary (a Debian cluster made by CreateDebianCluster) in Debian's layout:
// pg_createcluster for its configuration in /etc (its port, conf.d/safe_upgrade.conf pointing the
// worker at its own agent), its data directory replaced by a pg_basebackup of the primary with
// standby.signal and primary_conninfo (application_name = standby_name, through a physical slot
// of that name), its agent (role "standby", control = pg_ctlcluster) in dir, and both started.
// On failure it drops what it made and throws.
SandboxInfo CreateDebianStandby(const SandboxInfo& primary, const std::string& dir, const std::string& standby_name,
                                const SandboxOptions& options, DebianCluster& cluster);

// pg_dropcluster --stop, then removes what the agent left next to the data directory
// (<data directory>.failed-*, .ready-*). Never throws.
void DropDebianCluster(const DebianCluster& cluster);

}  // namespace safe_upgrade::testing
