// Catalog queries shared by the server and the agent (see catalog_queries.h).
#include "core/catalog_queries.h"

#include "core/cpp_only.h"  // no PostgreSQL server header may reach this file

namespace safe_upgrade {

const std::string& DependencyRowsQuery() {
  static const std::string query = R"SQL(
WITH RECURSIVE
-- Objects that belong to some extension: its members, and the parts of its members (constraints
-- and toast of its tables, members of its operator families, array types).
owned AS (
  SELECT x.classid, x.objid FROM pg_catalog.pg_depend x WHERE x.deptype = 'e'
  UNION
  SELECT x.classid, x.objid FROM pg_catalog.pg_depend x
    JOIN pg_catalog.pg_depend m ON m.classid = x.refclassid AND m.objid = x.refobjid AND m.deptype = 'e'
   WHERE x.deptype IN ('a', 'i')
),
-- The extension's members, and the extension itself (for objects marked
-- ALTER ... DEPENDS ON EXTENSION, deptype 'x').
members AS (
  SELECT d.classid, d.objid
    FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_depend d
      ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.refobjid = e.oid AND d.deptype = 'e'
   WHERE e.extname = $1
  UNION ALL
  SELECT 'pg_catalog.pg_extension'::pg_catalog.regclass, e.oid FROM pg_catalog.pg_extension e WHERE e.extname = $1
),
-- pg_depend with a view's _RETURN rule reported as the view itself.
deps AS (
  SELECT CASE WHEN r.oid IS NULL THEN d.classid ELSE 'pg_catalog.pg_class'::pg_catalog.regclass::oid END AS classid,
         CASE WHEN r.oid IS NULL THEN d.objid ELSE r.ev_class END AS objid,
         CASE WHEN r.oid IS NULL THEN d.objsubid ELSE 0 END AS objsubid,
         d.refclassid, d.refobjid, d.refobjsubid, d.deptype
    FROM pg_catalog.pg_depend d
    LEFT JOIN pg_catalog.pg_rewrite r
      ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid AND r.rulename = '_RETURN'
),
edges (classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype, depth) AS (
  SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid, d.refobjsubid, d.deptype, 1
    FROM members m
    JOIN deps d ON d.refclassid = m.classid AND d.refobjid = m.objid
   WHERE CASE WHEN d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
              THEN d.deptype = 'x'  -- not 'n': extensions that require this one are listed apart
              ELSE d.deptype IN ('n', 'a') END
     AND NOT EXISTS (SELECT 1 FROM owned w WHERE w.classid = d.classid AND w.objid = d.objid)
  UNION
  SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid, d.refobjsubid, d.deptype, p.depth + 1
    FROM edges p
    JOIN deps d
      ON d.refclassid = p.classid AND d.refobjid = p.objid AND (p.objsubid = 0 OR d.refobjsubid = p.objsubid)
   WHERE p.depth < 8
     AND d.deptype IN ('n', 'a')
     AND NOT (d.classid = p.classid AND d.objid = p.objid)
     AND NOT EXISTS (SELECT 1 FROM owned w WHERE w.classid = d.classid AND w.objid = d.objid)
)
SELECT DISTINCT obj.type AS object_type, obj.schema AS object_schema,
       coalesce(obj.identity, pg_catalog.pg_describe_object(e.classid, e.objid, e.objsubid)) AS object_identity,
       ref.type AS depends_on_type,
       coalesce(ref.identity, pg_catalog.pg_describe_object(e.refclassid, e.refobjid, e.refobjsubid))
         AS depends_on_identity,
       e.deptype::text AS deptype, e.classid::text AS classid, e.objid::text AS objid, e.objsubid::text AS objsubid,
       coalesce((SELECT c.relkind::text FROM pg_catalog.pg_class c
                  WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = e.objid), '') AS relkind
  FROM edges e
 CROSS JOIN LATERAL pg_catalog.pg_identify_object(e.classid, e.objid, e.objsubid) obj
 CROSS JOIN LATERAL pg_catalog.pg_identify_object(e.refclassid, e.refobjid, e.refobjsubid) ref
 ORDER BY 1, 2, 3, 4, 5, 6
)SQL";
  return query;
}

const std::string& DatabaseInventoryQuery() {
  static const std::string query = R"SQL(
SELECT pg_catalog.jsonb_build_object(
  'datname', pg_catalog.current_database(),
  'installed_version', e.extversion,
  'update_path',
    (SELECT pg_catalog.to_jsonb(pg_catalog.string_to_array(p.path, '--'))
       FROM pg_catalog.pg_extension_update_paths($1) p
      WHERE e.extversion IS NOT NULL AND $2::text IS NOT NULL AND p.source = e.extversion AND p.target = $2::text
        AND EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = $1)),
  'missing_requires',
    (SELECT coalesce(pg_catalog.jsonb_agg(r ORDER BY r), '[]'::jsonb)
       FROM pg_catalog.pg_available_extension_versions v, pg_catalog.unnest(v.requires) AS r
      WHERE v.name = $1 AND v.version = $2::text
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension x WHERE x.extname = r)),
  'required_by',
    (SELECT coalesce(pg_catalog.jsonb_agg(x.extname::text ORDER BY x.extname), '[]'::jsonb)
       FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension x ON x.oid = d.objid
      WHERE d.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass
        AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
        AND d.refobjid = e.oid AND d.deptype = 'n'),
  -- The same extensions with their versions and their own update path to $2 (null when there is
  -- none): plan() and begin() take those at $1's version along (an extension family).
  'requiring_extensions',
    (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'extname', x.extname::text, 'installed_version', x.extversion,
               'update_path',
                 CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = x.extname)
                      THEN (SELECT pg_catalog.to_jsonb(pg_catalog.string_to_array(p.path, '--'))
                              FROM pg_catalog.pg_extension_update_paths(x.extname) p
                             WHERE $2::text IS NOT NULL AND p.source = x.extversion AND p.target = $2::text) END)
             ORDER BY x.extname), '[]'::jsonb)
       FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension x ON x.oid = d.objid
      WHERE d.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass
        AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
        AND d.refobjid = e.oid AND d.deptype = 'n'),
  'dependents',
    (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'object_type', dep.object_type, 'object_schema', dep.object_schema,
               'object_identity', dep.object_identity, 'depends_on_type', dep.depends_on_type,
               'depends_on_identity', dep.depends_on_identity, 'deptype', dep.deptype)
             ORDER BY dep.object_type, dep.object_identity, dep.depends_on_type, dep.depends_on_identity),
             '[]'::jsonb)
       FROM ()SQL" + DependencyRowsQuery() +
                                   R"SQL() dep
      WHERE e.oid IS NOT NULL)
)::text
FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_extension e ON e.extname = $1
)SQL";
  return query;
}

}  // namespace safe_upgrade
