// Dependency rows and their drift (see dependency_rows.h).
#include "postgres/dependency_rows.h"

#include <map>
#include <tuple>

#include "core/catalog_queries.h"

namespace safe_upgrade {
namespace {

using nlohmann::json;

// The first six columns of a dependency row, in DependencyRowsQuery()'s order.
json RowOf(const Row& row) {
  return {
      {"object_type", row[0].value_or("")},         {"object_schema", row[1] ? json(*row[1]) : json(nullptr)},
      {"object_identity", row[2].value_or("")},     {"depends_on_type", row[3].value_or("")},
      {"depends_on_identity", row[4].value_or("")}, {"deptype", row[5].value_or("n")}};
}

}  // namespace

std::vector<Dependent> QueryDependents(PgConn& conn, const std::string& extname) {
  auto r = conn.Exec(DependencyRowsQuery(), {extname});
  std::vector<Dependent> out;
  for (const auto& row : r.rows) {
    Dependent d;
    d.row = RowOf(row);
    d.classid = row[6].value_or("0");
    d.objid = row[7].value_or("0");
    d.objsubid = std::stoi(row[8].value_or("0"));
    d.relkind = row[9].value_or("");
    out.push_back(std::move(d));
  }
  return out;
}

json DependencyRows(PgConn& conn, const std::string& extname) {
  json out = json::array();
  for (auto& d : QueryDependents(conn, extname)) out.push_back(std::move(d.row));
  return out;
}

json RecordedDependencyRows(PgConn& conn, int64_t upgrade_id, const std::string& phase,
                            const std::string& datname) {
  auto r = conn.Exec(
      "SELECT object_type, object_schema, object_identity, depends_on_type, depends_on_identity, "
      "deptype::text FROM safe_upgrade.dependency_snapshots "
      "WHERE upgrade_id = $1::bigint AND phase = $2 AND datname = $3 ORDER BY 1, 3, 4, 5",
      {std::to_string(upgrade_id), phase, datname});
  json out = json::array();
  for (const auto& row : r.rows) out.push_back(RowOf(row));
  return out;
}

json DependencyDrift(const json& before, const json& after) {
  using Key = std::tuple<std::string, std::string, std::string, std::string>;
  auto key = [](const json& r) {
    return Key{r.value("object_type", ""), r.value("object_identity", ""), r.value("depends_on_type", ""),
               r.value("depends_on_identity", "")};
  };
  std::map<Key, json> b, a;
  for (const auto& r : before) b[key(r)] = r;
  for (const auto& r : after) a[key(r)] = r;
  json added = json::array(), removed = json::array(), changed = json::array();
  for (const auto& [k, r] : a)
    if (!b.count(k)) added.push_back(r);
  for (const auto& [k, r] : b)
    if (!a.count(k)) removed.push_back(r);
  // An object present on both sides whose dependencies differ (e.g. a view now bound to a
  // function with a new signature) is also listed once as changed.
  std::map<std::pair<std::string, std::string>, std::pair<json, json>> objects;
  for (const auto& [k, r] : b) {
    auto& e = objects[{std::get<0>(k), std::get<1>(k)}];
    if (e.first.is_null()) e.first = json::array();
    e.first.push_back(r.value("depends_on_type", "") + " " + r.value("depends_on_identity", ""));
  }
  for (const auto& [k, r] : a) {
    auto& e = objects[{std::get<0>(k), std::get<1>(k)}];
    if (e.second.is_null()) e.second = json::array();
    e.second.push_back(r.value("depends_on_type", "") + " " + r.value("depends_on_identity", ""));
  }
  for (const auto& [obj, deps] : objects) {
    if (deps.first.is_null() || deps.second.is_null() || deps.first == deps.second) continue;
    changed.push_back({{"object_type", obj.first},
                       {"object_identity", obj.second},
                       {"before", deps.first},
                       {"after", deps.second}});
  }
  return {{"added", added}, {"removed", removed}, {"changed", changed}};
}

}  // namespace safe_upgrade
