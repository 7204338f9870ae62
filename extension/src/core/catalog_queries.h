// The catalog queries that the server (plan, begin: in every database of the cluster) and the
// agent (dry-run clone, production checks) both run, so that "before" and "after" rows compare
// like with like. Plain SQL text with bind parameters; no postgres.h, no libpq.
#pragma once

#include <string>

namespace safe_upgrade {

// User objects (not owned by any extension) that depend on a member of extension $1, directly
// or through other user objects (a view on a view, a foreign table through its server), one row
// per dependency edge. A view is reported as the view, not as its _RETURN rule. Columns:
// object_type, object_schema, object_identity, depends_on_type, depends_on_identity, deptype,
// classid, objid, objsubid, relkind (text; relkind "" for non-relations).
const std::string& DependencyRowsQuery();

// One row, one column: a JSON object describing extension $1 in the current database, for an
// upgrade to version $2 (text, may be NULL): datname, installed_version (null when not
// installed), update_path (the versions on the way, from the installed one to $2; null when
// there is none), missing_requires (extensions $2 requires that are not installed here),
// required_by (installed extensions that require $1), requiring_extensions (the same, each as
// {extname, installed_version, update_path to $2 or null}), dependents (DependencyRowsQuery's first
// six columns as objects).
const std::string& DatabaseInventoryQuery();

}  // namespace safe_upgrade
