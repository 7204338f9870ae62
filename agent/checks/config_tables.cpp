// The extension's registered tables before and after an upgrade (config_tables.h).
#include "checks/config_tables.h"

namespace safe_upgrade {

std::vector<ConfigTable> ReadConfigTables(PgConn& conn, const std::string& extname) {
  std::vector<ConfigTable> tables;
  auto names = conn.Exec(
      "SELECT c.oid::regclass::text FROM pg_catalog.pg_extension e, unnest(e.extconfig) AS cfg(oid) "
      "JOIN pg_catalog.pg_class c ON c.oid = cfg.oid WHERE e.extname = $1 ORDER BY 1",
      {extname});
  for (const auto& row : names.rows) {
    ConfigTable t;
    t.name = row[0].value_or("");
    // The name is the catalog's own regclass text, already quoted; it comes from no request.
    t.rows = std::stoll(conn.Exec("SELECT count(*) FROM " + t.name).Scalar());
    if (t.rows <= kContentRows)
      t.contents_md5 = conn.Exec("SELECT coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') FROM " +
                                 t.name + " AS r")
                           .Scalar();
    tables.push_back(t);
  }
  return tables;
}

ConfigTableChanges CompareConfigTables(const std::vector<ConfigTable>& before, const std::vector<ConfigTable>& after) {
  ConfigTableChanges out;
  for (const auto& b : before) {
    const ConfigTable* a = nullptr;
    for (const auto& candidate : after)
      if (candidate.name == b.name) a = &candidate;
    if (!a) {
      if (b.rows > 0)
        out.losses.push_back(b.name + ": " + std::to_string(b.rows) +
                             " row(s) before the upgrade; the table is gone (dropped, or no longer the extension's)");
      continue;
    }
    if (a->rows < b.rows)
      out.losses.push_back(b.name + ": " + std::to_string(b.rows) + " row(s) before the upgrade, " +
                           std::to_string(a->rows) + " after");
    else if (b.contents_md5 && a->contents_md5 && *b.contents_md5 != *a->contents_md5)
      out.changed.push_back(b.name);
  }
  return out;
}

nlohmann::json ConfigTableChanges::ToJson() const { return {{"losses", losses}, {"changed", changed}}; }

nlohmann::json ToJson(const std::vector<ConfigTable>& tables) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : tables) out.push_back({{"table", t.name}, {"rows", t.rows}});
  return out;
}

}  // namespace safe_upgrade
