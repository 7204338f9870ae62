// Runs ALTER EXTENSION ... UPDATE hop by hop inside one transaction, on whatever connection it is
// given (a dry-run clone or production), timing each hop and capturing the locks the upgrade
// holds just before COMMIT. Shared by the dry run and the apply job so that both run exactly the
// same statements.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "postgres/catalog.h"
#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct Hop {
  std::string from, to;
  int64_t duration_ms = 0;
  std::string extname;  // set by PlanUpgrade
  std::string Name() const { return from + " -> " + to; }
};

// The hops from `current_version` to to_version: a database's update_path (which may start with
// the installed version) or, when that is empty, one hop straight to to_version.
std::vector<Hop> PlanHops(const std::vector<std::string>& update_path, const std::string& to_version,
                          const std::string& current_version);

// One extension's part of an upgrade transaction: its name and its hops.
struct ExtensionUpgrade {
  std::string extname;
  std::vector<Hop> hops;
};

// What one database's upgrade transaction runs: extname's hops from current_version, then each
// member of the database's family (extensions that require it) from its own from_version to the
// same target, so that the family moves together or not at all.
std::vector<ExtensionUpgrade> PlanUpgrade(const std::string& extname, const UpgradeDatabase& db,
                                          const std::string& to_version, const std::string& current_version);
// " with postgis_raster, postgis_topology" for a database with a family; "" otherwise.
std::string WithFamily(const UpgradeDatabase& db);
// The number of hops of all of them.
size_t HopCount(const std::vector<ExtensionUpgrade>& upgrades);

struct UpgradeRunOptions {
  std::string lock_timeout = "2s";
  std::string statement_timeout = "0";
  // Called after each hop that succeeded.
  std::function<void(const Hop&)> on_hop;
  // Called every poll_interval while a hop's statement runs, e.g. to record who blocks it.
  std::function<void(std::chrono::milliseconds running_for)> while_running;
  std::chrono::milliseconds poll_interval{100};
};

struct UpgradeOutcome {
  std::string extname;                                    // the main extension (the first one run)
  std::vector<Hop> hops;                                  // the hops that succeeded, of every extension
  nlohmann::json lock_profile = nlohmann::json::array();  // [{locktype, object, mode}]
  bool committed = false;
  std::optional<Hop> failed_hop;  // the hop whose statement failed
  std::optional<PgError> error;   // why it did not commit
  // The connection broke while COMMIT was in flight: the caller must find out from the catalog
  // (on a new connection) whether it committed.
  bool commit_outcome_unknown = false;
  bool LockTimeout() const { return error && error->sqlstate() == "55P03"; }
  // "hop 1.1 -> 1.2 failed: <message> (DETAIL: ...)" or "commit failed: ...".
  std::string FailureMessage() const;
  nlohmann::json ToJson() const;
};

// BEGIN; lock_timeout and statement_timeout for this transaction; one ALTER EXTENSION per hop,
// extension after extension in the order given (the main one first, then its family); the lock
// profile; COMMIT. A failing statement rolls the whole transaction back, for every extension.
// Never throws PgError for a statement failure (it is in the outcome); throws only when it
// cannot even begin.
UpgradeOutcome RunUpgrade(PgConn& conn, const std::vector<ExtensionUpgrade>& upgrades,
                          const UpgradeRunOptions& options);

// The locks the current transaction holds, as [{locktype, object, mode}], duplicates removed.
nlohmann::json CaptureLockProfile(PgConn& conn);

// Installed version of the extension ("" when not installed).
std::string InstalledVersion(PgConn& conn, const std::string& extname);
// Appends each object of items to list, tagged with the database it came from: how reports that
// cover several databases keep one flat list of hops, locks, checks or blockers.
void AppendForDatabase(nlohmann::json& list, const nlohmann::json& items, const std::string& datname);

// The extension's installed version in each database of the upgrade, read on fresh connections.
// Throws PgError when a database cannot be read.
std::map<std::string, std::string> InstalledVersions(const AgentConfig& config, const UpgradeRecord& upgrade);

}  // namespace safe_upgrade
