// The extension's own data: the tables it registered with pg_extension_config_dump (pg_cron's
// jobs, pg_partman's part_config, ...) hold rows its users wrote. An update script that drops or
// empties one loses them while the catalog looks fine, so the dry run counts their rows before
// and after the upgrade on the clone, and a loss blocks the upgrade, naming the table.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "postgres/pg_conn.h"

namespace safe_upgrade {

struct ConfigTable {
  std::string name;  // regclass text, quoted as needed: public.su_cfg_jobs
  int64_t rows = 0;
  // md5 of the rows' text in order, for tables of at most kContentRows rows; nullopt above.
  std::optional<std::string> contents_md5;
};

constexpr int64_t kContentRows = 10000;

// The extension's registered tables (pg_extension.extconfig) in the connected database, counted.
std::vector<ConfigTable> ReadConfigTables(PgConn& conn, const std::string& extname);

struct ConfigTableChanges {
  std::vector<std::string> losses;   // "public.t: 3 rows before the upgrade, 0 after" or "... dropped"
  std::vector<std::string> changed;  // tables whose rows were rewritten, the count kept
  nlohmann::json ToJson() const;
};
ConfigTableChanges CompareConfigTables(const std::vector<ConfigTable>& before, const std::vector<ConfigTable>& after);
nlohmann::json ToJson(const std::vector<ConfigTable>& tables);

}  // namespace safe_upgrade
