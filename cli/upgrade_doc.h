// One upgrade as the command line sees it, read from the catalog tables (upgrades, events,
// restore_points, upgrade_databases, upgrade_standbys, which are part of the contract). Its renderings are in
// renderers.h (for people) and upgrade_json.h (--json); its phases in timeline.h.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "postgres/pg_conn.h"

namespace safe_upgrade::cli {

struct UpgradeDoc {
  int64_t id = 0;
  nlohmann::json upgrade;        // the upgrades row (to_jsonb)
  nlohmann::json restore_point;  // the restore_points row, or null
  nlohmann::json databases;      // the upgrade_databases rows, in name order
  nlohmann::json standbys;       // the upgrade_standbys rows, in name order
  nlohmann::json events;         // events rows with id > the cursor asked for, each plus "at_epoch"
  double created_epoch = 0, updated_epoch = 0, now_epoch = 0;  // server clock

  std::string State() const;
  std::string Extname() const;
  std::string FromVersion() const;
  std::string ToVersion() const;
  const nlohmann::json& Report() const;
};

// nullopt when there is no such upgrade. Events are those with id > after_event_id.
std::optional<UpgradeDoc> LoadUpgradeDoc(PgConn& conn, int64_t id, int64_t after_event_id = 0);
// The in-flight upgrade, else the most recent one; nullopt when there are none.
std::optional<int64_t> CurrentUpgradeId(PgConn& conn);

}  // namespace safe_upgrade::cli
