// The dependency rows of an upgrade: the user objects that depend on the extension's objects, as
// the one query of core/catalog_queries.h finds them. begin() records them "before" in every
// database of the upgrade (through safe_upgrade._database_inventory, which runs the same query);
// the dry run reads them "after" on the clone, records them, and compares the two ("drift").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "postgres/pg_conn.h"

namespace safe_upgrade {

// Fixed catalog OIDs (RelationRelationId, ProcedureRelationId), as pg_depend.classid text.
constexpr const char* kPgClassOid = "1259";
constexpr const char* kPgProcOid = "1255";

// One row of DependencyRowsQuery(): the row as recorded, and the object's catalog address.
struct Dependent {
  // {object_type, object_schema, object_identity, depends_on_type, depends_on_identity, deptype}
  nlohmann::json row;
  std::string classid, objid;
  int objsubid = 0;
  std::string relkind;  // "" for non-relations
};

// User objects that depend on the extension's objects in the connected database.
std::vector<Dependent> QueryDependents(PgConn& conn, const std::string& extname);

// The same, as rows only.
nlohmann::json DependencyRows(PgConn& conn, const std::string& extname);
// The rows recorded for the upgrade in database datname (empty when none).
nlohmann::json RecordedDependencyRows(PgConn& conn, int64_t upgrade_id, const std::string& phase,
                                      const std::string& datname);

// Differences between two sets of dependency rows: {added: [rows], removed: [rows],
// changed: [{object_type, object_identity, before: [...], after: [...]}]}.
nlohmann::json DependencyDrift(const nlohmann::json& before, const nlohmann::json& after);

}  // namespace safe_upgrade
