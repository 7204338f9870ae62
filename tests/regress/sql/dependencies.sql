-- dependency_rows(): the user objects that depend on an extension's members, directly or through
-- other user objects, and nothing that belongs to an extension.
\pset format unaligned
\pset tuples_only on

CREATE TABLE docs (id int PRIMARY KEY, attrs hstore DEFAULT hstore('created', 'yes'),
                   modified timestamptz,
                   CHECK (NOT exist(attrs, 'forbidden')));
CREATE INDEX docs_attrs_gist ON docs USING gist (attrs);
CREATE VIEW doc_keys AS SELECT id, akeys(attrs) AS keys FROM docs;
CREATE VIEW doc_keys_again AS SELECT * FROM doc_keys;
CREATE MATERIALIZED VIEW doc_sizes AS SELECT id, array_length(akeys(attrs), 1) AS n FROM docs;
CREATE DOMAIN small_hstore AS hstore CHECK (array_length(akeys(VALUE), 1) < 10);
CREATE TYPE doc_pair AS (a hstore, b int);
CREATE FUNCTION doc_has(h hstore, k text) RETURNS boolean LANGUAGE sql AS 'SELECT h ? k';
-- Marked as belonging with the extension (dropped with it).
CREATE FUNCTION doc_touch() RETURNS int LANGUAGE sql AS 'SELECT 1';
ALTER FUNCTION doc_touch() DEPENDS ON EXTENSION hstore;
-- Not dependent: a view that does not touch the hstore column.
CREATE VIEW doc_ids AS SELECT id FROM docs;
SELECT concat_ws(' | ', object_type, coalesce(object_schema, '-'), object_identity, depends_on_type, depends_on_identity, deptype)
  FROM safe_upgrade.dependency_rows('hstore');

-- A trigger that uses an extension's trigger function.
CREATE EXTENSION moddatetime;
CREATE TRIGGER docs_modified BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION moddatetime(modified);
SELECT concat_ws(' | ', object_type, coalesce(object_schema, '-'), object_identity, depends_on_type, depends_on_identity, deptype)
  FROM safe_upgrade.dependency_rows('moddatetime');

-- Foreign servers and, through them, foreign tables and user mappings of an FDW extension.
CREATE EXTENSION postgres_fdw VERSION '1.0';
CREATE SERVER regress_loopback FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'su_regression');
CREATE USER MAPPING FOR regress_su_op SERVER regress_loopback;
CREATE FOREIGN TABLE remote_docs (id int) SERVER regress_loopback OPTIONS (table_name 'docs');
SELECT concat_ws(' | ', object_type, coalesce(object_schema, '-'), object_identity, depends_on_type, depends_on_identity, deptype)
  FROM safe_upgrade.dependency_rows('postgres_fdw');

-- Objects of another extension (earthdistance is built on cube) are not user objects, and the
-- extension that requires this one shows in plan() as required_by.
CREATE EXTENSION cube VERSION '1.2';
CREATE EXTENSION earthdistance;
SELECT 'cube rows: ' || count(*) FROM safe_upgrade.dependency_rows('cube');
CREATE TABLE boxes (b cube);
SELECT concat_ws(' | ', object_type, coalesce(object_schema, '-'), object_identity, depends_on_type, depends_on_identity, deptype)
  FROM safe_upgrade.dependency_rows('cube');

-- Unknown and uninstalled extensions have no rows (plan() and begin() reject them).
SELECT 'unknown rows: ' || count(*) FROM safe_upgrade.dependency_rows('no_such_extension');

-- plan(): versions, path, requirements, dependents, PITR facts, rollback, verdict.
SELECT key FROM jsonb_object_keys(safe_upgrade.plan('hstore', '1.8')) key ORDER BY key;
SELECT key FROM jsonb_object_keys(safe_upgrade.plan('hstore', '1.8') -> 'pitr') key ORDER BY key;
SELECT key FROM jsonb_object_keys(safe_upgrade.plan('hstore', '1.8') -> 'rollback') key ORDER BY key;
SELECT p ->> 'installed_version', p ->> 'target_version', p -> 'update_path', p ->> 'verdict',
       jsonb_array_length(p -> 'dependents') = (SELECT count(*) FROM safe_upgrade.dependency_rows('hstore'))
  FROM safe_upgrade.plan('hstore', '1.8') p;
SELECT p -> 'update_path', p -> 'requires', p -> 'required_by' FROM safe_upgrade.plan('cube', '1.5') p;
-- earthdistance (1.1) is not at cube's version, so it is not upgraded with cube: not in the
-- database's family, and a warning names it.
SELECT p #> '{databases,0,family}', w FROM safe_upgrade.plan('cube', '1.5') p,
       jsonb_array_elements_text(p -> 'warnings') w WHERE w LIKE '%earthdistance%';
SELECT p -> 'update_path' FROM safe_upgrade.plan('postgres_fdw', '1.1') p;
SELECT (p #>> '{rollback,cost}') LIKE 'restore snapshot of % bytes (%) + WAL replay%',
       (p #>> '{rollback,loses}') LIKE 'every write committed after the restore point%',
       (p #>> '{pitr,snapshot_free_bytes}') IS NULL, (p #>> '{pitr,database_size_bytes}')::bigint > 0
  FROM safe_upgrade.plan('hstore', '1.8') p;
SELECT h FROM jsonb_array_elements_text(safe_upgrade.plan('hstore', '1.8') -> 'hints') h;
-- plan() is read-only.
SELECT catalog_fingerprint();
