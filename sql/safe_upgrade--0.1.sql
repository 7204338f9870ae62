-- safe_upgrade 0.1: catalog, roles and the SQL surface.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION safe_upgrade" to load this file. \quit

DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'safe_upgrade_operator') THEN
    CREATE ROLE safe_upgrade_operator NOLOGIN;
  END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------------------
-- Catalog
-- ---------------------------------------------------------------------------------------------

CREATE TABLE @extschema@.upgrades (
  id               bigserial PRIMARY KEY,
  extname          name NOT NULL,
  from_version     text NOT NULL,
  to_version       text NOT NULL,
  update_path      text[] NOT NULL DEFAULT '{}',
  state            text NOT NULL DEFAULT 'queued' CHECK (state IN (
                     'queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled',
                     'applying', 'verifying', 'rolling_back',
                     'succeeded', 'validated', 'blocked', 'failed', 'rolled_back', 'rollback_failed',
                     'cancelled')),
  options          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
  created_by       name NOT NULL DEFAULT session_user,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  not_before       timestamptz NOT NULL DEFAULT now(),
  approved_at      timestamptz,
  approved_by      name,
  cancel_requested boolean NOT NULL DEFAULT false,
  rollback_requested_at timestamptz,
  -- the agent job the worker follows, and how far its events were copied
  agent_job        text,
  agent_job_cursor bigint NOT NULL DEFAULT 0,
  progress         double precision,
  phase_started_at timestamptz,
  snapshot         jsonb,
  report           jsonb NOT NULL DEFAULT '{}',
  error            text
);

-- At most one in-flight upgrade per extension, enforced by the database even under concurrency.
CREATE UNIQUE INDEX upgrades_one_in_flight ON @extschema@.upgrades (extname)
  WHERE state IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled',
                  'applying', 'verifying', 'rolling_back');

CREATE TABLE @extschema@.events (
  id          bigserial PRIMARY KEY,
  upgrade_id  bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  phase       text NOT NULL,
  level       text NOT NULL DEFAULT 'info' CHECK (level IN ('info', 'warning', 'error')),
  message     text NOT NULL,
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_upgrade_id ON @extschema@.events (upgrade_id, id);

CREATE TABLE @extschema@.restore_points (
  upgrade_id      bigint PRIMARY KEY REFERENCES @extschema@.upgrades (id),
  name            text NOT NULL UNIQUE CHECK (octet_length(name) <= 63),
  lsn             pg_lsn NOT NULL,
  timeline        integer NOT NULL,
  xid             xid8,
  backup_stop_lsn pg_lsn,
  wal_segment     text,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per database an upgrade covers: where it starts, its hops, and what each phase found
-- there (report: dry_run, apply, verify). A point-in-time recovery rewinds these rows with the
-- rest of the cluster; the agent writes the outcome back.
CREATE TABLE @extschema@.upgrade_databases (
  upgrade_id    bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  datname       name NOT NULL,
  from_version  text NOT NULL,
  update_path   text[] NOT NULL,
  outcome       text NOT NULL DEFAULT 'pending' CHECK (outcome IN (
                  'pending', 'dry_run_passed', 'dry_run_failed', 'applied', 'not_applied',
                  'verified', 'verify_failed', 'rolled_back')),
  report        jsonb NOT NULL DEFAULT '{}',
  error         text,
  PRIMARY KEY (upgrade_id, datname)
);

CREATE TABLE @extschema@.dependency_snapshots (
  upgrade_id        bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  phase             text NOT NULL CHECK (phase IN ('before', 'after')),
  object_type       text NOT NULL,
  object_schema     text,
  object_identity   text NOT NULL,
  depends_on_type   text NOT NULL,
  depends_on_identity text NOT NULL,
  deptype           "char" NOT NULL,
  datname           name NOT NULL DEFAULT current_database(),  -- the database the object lives in
  PRIMARY KEY (upgrade_id, datname, phase, object_type, object_identity, depends_on_type, depends_on_identity)
);

CREATE TABLE @extschema@.health_checks (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
  extname     name,
  check_sql   text NOT NULL CHECK (btrim(check_sql) <> ''),
  timeout     interval NOT NULL DEFAULT '30 seconds' CHECK (timeout > interval '0'),
  created_by  name NOT NULL DEFAULT session_user,
  created_at  timestamptz NOT NULL DEFAULT now(),
  datname     name  -- the database it runs in; NULL: every database of the upgrade
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.restore_points', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrade_databases', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.dependency_snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA @extschema@ TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Functions implemented in C++ (extension/src/pg)
-- ---------------------------------------------------------------------------------------------

-- What the background worker last saw of the agent. data_directory is shown only to roles that may
-- read the server's own data_directory setting (superusers, pg_read_all_settings).
CREATE FUNCTION @extschema@.agent_status(
  OUT reachable boolean, OUT agent_version text, OUT system_identifier numeric,
  OUT data_directory text, OUT address text, OUT last_error text, OUT checked_at timestamptz,
  OUT worker_pid integer, OUT snapshot_free_bytes bigint, OUT disk_reserve_bytes bigint,
  OUT wal_archive_writable boolean, OUT data_free_bytes bigint,
  OUT wal_archive_newest text, OUT wal_archive_oldest text, OUT wal_needed_from text,
  OUT wal_archive_files bigint, OUT wal_archive_bytes bigint,
  OUT snapshot_method_configured text, OUT snapshot_method text, OUT snapshot_method_reason text,
  OUT snapshot_method_possible boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'safe_upgrade_agent_status'
LANGUAGE C STRICT VOLATILE;

-- Wakes the background worker when the calling transaction commits.
CREATE FUNCTION @extschema@._wake_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'safe_upgrade_wake_worker_at_commit'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION @extschema@._wake_worker_at_commit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._wake_worker_at_commit() TO safe_upgrade_operator;

-- Deterministic restore point name for an upgrade: su_<id>_<short system identifier>.
CREATE FUNCTION @extschema@.restore_point_name(upgrade_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'safe_upgrade_restore_point_name'
LANGUAGE C STRICT STABLE;

-- ---------------------------------------------------------------------------------------------
-- SQL surface (plpgsql). Every function pins search_path and qualifies every name, so objects
-- that a user creates in another schema can never stand in for ours or the catalog's. No
-- function builds SQL text from its arguments: values reach queries as plpgsql variables (bind
-- parameters).
-- ---------------------------------------------------------------------------------------------

-- The states, in one place.
CREATE FUNCTION @extschema@._in_flight_states()
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT ARRAY['queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled',
               'applying', 'verifying', 'rolling_back']
$fn$;

CREATE FUNCTION @extschema@._terminal_states()
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT ARRAY['succeeded', 'validated', 'blocked', 'failed', 'rolled_back', 'rollback_failed', 'cancelled']
$fn$;

-- A user-supplied value as it may appear inside an error message: one short line, control
-- characters shown as "?".
CREATE FUNCTION @extschema@._for_message(value text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT regexp_replace(CASE WHEN length($1) > 64 THEN left($1, 64) || '...' ELSE $1 END, '[[:cntrl:]]', '?', 'g')
$fn$;

-- What extension $2 looks like in database $1, for an upgrade to version $3 (see
-- extension/src/core/catalog_queries.h): installed_version, update_path, missing_requires,
-- required_by, dependents. Another database is read by a short-lived background worker.
CREATE FUNCTION @extschema@._database_inventory(datname name, extname name, target_version text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'safe_upgrade_database_inventory'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- The dependency snapshot of this database: every user object that depends on a member of the
-- extension, directly or through other user objects (a foreign table through its server, a view
-- through a view, an index through a column of the extension's type), one row per dependency
-- edge. A view is reported as the view, not as its _RETURN rule. The agent runs the same query
-- on the clone after the upgrade, so "before" and "after" rows compare like with like.
CREATE FUNCTION @extschema@.dependency_rows(extname name)
RETURNS TABLE (object_type text, object_schema text, object_identity text,
               depends_on_type text, depends_on_identity text, deptype "char")
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT r.object_type, r.object_schema, r.object_identity, r.depends_on_type, r.depends_on_identity,
         r.deptype::"char"
    FROM jsonb_to_recordset(@extschema@._database_inventory(current_database(), $1, NULL) -> 'dependents')
         AS r (object_type text, object_schema text, object_identity text, depends_on_type text,
               depends_on_identity text, deptype text)
   ORDER BY 1, 2, 3, 4, 5, 6
$fn$;

-- The databases an upgrade of extension $1 to version $2 covers: those named in $3, or (NULL)
-- every database of the cluster that has the extension. Returns {databases: [one inventory per
-- database to upgrade], skipped: [{datname, reason, installed_version}]}, or raises the error
-- that plan() and begin() share: 42704 for an unknown extension or database, 22023 for a target
-- that is unavailable, already installed or unreachable, or for a named database that cannot be
-- upgraded.
CREATE FUNCTION @extschema@._select_databases(extname name, target_version text, databases text[])
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_ext name := $1;
  v_target text := $2;
  v_named text[] := $3;
  v_db record;
  v_info jsonb;
  v_infos jsonb := '[]';
  v_skipped jsonb := '[]';
  v_selected jsonb := '[]';
  v_available text;
  v_list text;
  v_first jsonb;
  -- Update paths lead only to versions the server has.
  v_inventory_target text := CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_available_extension_versions v
                                                WHERE v.name = $1 AND v.version = $2) THEN $2 END;
BEGIN
  IF v_ext IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'extension name must not be null',
      HINT = 'Pass the name of an installed extension, for example safe_upgrade.plan(''hstore'', ''1.8'').';
  END IF;
  IF v_ext = 'safe_upgrade' THEN
    RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'safe_upgrade cannot upgrade itself',
      HINT = 'Run ALTER EXTENSION safe_upgrade UPDATE directly while no upgrade is in flight.';
  END IF;
  SELECT string_agg(format('"%s"', @extschema@._for_message(n)), ', ' ORDER BY n) INTO v_list
    FROM unnest(v_named) n WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = n);
  IF v_list IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = format('database %s does not exist', v_list),
      HINT = 'Name databases listed by SELECT datname FROM pg_database, or leave "databases" out to upgrade '
             'the extension in every database that has it.';
  END IF;

  -- Read every database that can be read (and was named, when some were).
  FOR v_db IN SELECT d.datname, d.datistemplate, d.datallowconn FROM pg_catalog.pg_database d
               WHERE v_named IS NULL OR d.datname::text = ANY (v_named) ORDER BY d.datname LOOP
    IF v_db.datistemplate OR NOT v_db.datallowconn THEN
      IF v_named IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
          MESSAGE = format('database "%s" cannot be upgraded: it is a template or does not allow connections',
                           v_db.datname),
          HINT = 'Upgrade the extension in templates by hand; name only databases that allow connections.';
      END IF;
      v_skipped := v_skipped || jsonb_build_object('datname', v_db.datname, 'installed_version', NULL,
        'reason', CASE WHEN v_db.datistemplate THEN 'template database: not read or changed (new databases copy it)'
                       ELSE 'datallowconn is false: it cannot be read or upgraded' END);
      CONTINUE;
    END IF;
    v_info := @extschema@._database_inventory(v_db.datname, v_ext, v_inventory_target);
    IF v_info ? 'error' THEN
      RAISE EXCEPTION USING ERRCODE = '58000',
        MESSAGE = format('could not read extension "%s" in database "%s": %s', v_ext, v_db.datname, v_info ->> 'error'),
        HINT = 'See the server log; plan() and begin() read every database that allows connections.';
    END IF;
    v_infos := v_infos || jsonb_build_array(v_info);
  END LOOP;

  -- The errors, in the order a user fixes them.
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_infos) i WHERE i ->> 'installed_version' IS NOT NULL) THEN
    IF v_named IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('extension "%s" is not installed in database %s', @extschema@._for_message(v_ext),
                         array_to_string(v_named, ', ')),
        HINT = 'Name databases that have it, or leave "databases" out to upgrade it wherever it is installed.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = v_ext) THEN
      RAISE EXCEPTION USING ERRCODE = '42704',
        MESSAGE = format('extension "%s" is not installed in any database of the cluster', v_ext),
        HINT = 'safe_upgrade upgrades installed extensions; install this one with CREATE EXTENSION first.';
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('extension "%s" does not exist', @extschema@._for_message(v_ext)),
      HINT = 'Check the name against SELECT name, installed_version FROM pg_available_extensions.';
  END IF;
  SELECT string_agg(i ->> 'datname', ', ' ORDER BY i ->> 'datname') INTO v_list
    FROM jsonb_array_elements(v_infos) i WHERE i ->> 'installed_version' IS NULL AND v_named IS NOT NULL;
  IF v_list IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('extension "%s" is not installed in database %s', v_ext, v_list),
      HINT = 'Name only databases that have it, or leave "databases" out to upgrade it wherever it is installed.';
  END IF;
  v_infos := (SELECT coalesce(jsonb_agg(i ORDER BY i ->> 'datname'), '[]') FROM jsonb_array_elements(v_infos) i
               WHERE i ->> 'installed_version' IS NOT NULL);
  v_first := v_infos -> 0;
  IF v_target IS NULL OR btrim(v_target) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'target version must not be empty',
      HINT = format('Pass one of the versions listed by '
                    'SELECT version FROM pg_available_extension_versions WHERE name = %L.', v_ext);
  END IF;
  SELECT string_agg(v.version, ', ' ORDER BY v.version) INTO v_available
    FROM pg_catalog.pg_available_extension_versions v WHERE v.name = v_ext;
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_infos) i WHERE i ->> 'installed_version' <> v_target) THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('extension "%s" is already at version %s', v_ext, v_target)
                || CASE WHEN jsonb_array_length(v_infos) > 1 THEN ' in every database that has it' ELSE '' END,
      HINT = format('There is nothing to upgrade. The versions this server has for %s are: %s.', v_ext, v_available);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extension_versions v
                  WHERE v.name = v_ext AND v.version = v_target) THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('version %s of extension "%s" is not available', @extschema@._for_message(v_target), v_ext),
      HINT = format('The versions this server has for %s are: %s. '
                    'Install the new version''s files on the server first.',
                    v_ext, v_available);
  END IF;
  SELECT string_agg(format('%s (at %s)', i ->> 'datname', i ->> 'installed_version'), ', ' ORDER BY i ->> 'datname')
    INTO v_list FROM jsonb_array_elements(v_infos) i
   WHERE v_named IS NOT NULL AND (i ->> 'installed_version' = v_target OR jsonb_typeof(i -> 'update_path') IS DISTINCT FROM 'array');
  IF v_list IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('extension "%s" cannot be upgraded to %s in database %s', v_ext, v_target, v_list),
      HINT = 'A named database must have an older version with an update path to the target; '
             'name only those, or leave "databases" out to skip the others with their reason.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_infos) i WHERE jsonb_typeof(i -> 'update_path') = 'array') THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('extension "%s" has no update path from version %s to %s', v_ext,
                       (SELECT string_agg(DISTINCT i ->> 'installed_version', ', ') FROM jsonb_array_elements(v_infos) i
                         WHERE i ->> 'installed_version' <> v_target), v_target),
      HINT = format('The extension ships no chain of update scripts between these versions '
                    '(downgrades usually have none); choose a target listed by '
                    'SELECT target FROM pg_extension_update_paths(%L) WHERE source = %L AND path IS NOT NULL.',
                    v_ext, v_first ->> 'installed_version');
  END IF;
  -- ALTER EXTENSION ... UPDATE does not install what the new version newly requires.
  SELECT string_agg(format('%s in database %s', m.names, i ->> 'datname'), '; ' ORDER BY i ->> 'datname')
    INTO v_list
    FROM jsonb_array_elements(v_infos) i
   CROSS JOIN LATERAL (SELECT string_agg(r, ', ' ORDER BY r) AS names
                         FROM jsonb_array_elements_text(i -> 'missing_requires') r) m
   WHERE jsonb_typeof(i -> 'update_path') = 'array' AND m.names IS NOT NULL;
  IF v_list IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('version %s of extension "%s" requires extensions that are not installed: %s',
                       v_target, v_ext, v_list),
      HINT = 'Install the required extensions with CREATE EXTENSION first, then plan the upgrade again.';
  END IF;

  FOR v_info IN SELECT i FROM jsonb_array_elements(v_infos) i LOOP
    IF v_info ->> 'installed_version' = v_target THEN
      v_skipped := v_skipped || jsonb_build_object('datname', v_info ->> 'datname',
        'installed_version', v_info ->> 'installed_version', 'reason', format('already at version %s', v_target));
    ELSIF jsonb_typeof(v_info -> 'update_path') IS DISTINCT FROM 'array' THEN
      v_skipped := v_skipped || jsonb_build_object('datname', v_info ->> 'datname',
        'installed_version', v_info ->> 'installed_version',
        'reason', format('no update path from version %s to %s', v_info ->> 'installed_version', v_target));
    ELSE
      v_selected := v_selected || jsonb_build_array(v_info - 'missing_requires');
    END IF;
  END LOOP;
  RETURN jsonb_build_object(
    'databases', v_selected,
    'skipped', (SELECT coalesce(jsonb_agg(x ORDER BY x ->> 'datname'), '[]') FROM jsonb_array_elements(v_skipped) x));
END
$fn$;

-- Raises 42501 unless the session user may change upgrades. EXECUTE on the mutating functions is
-- already limited to safe_upgrade_operator; this also covers a grant made by mistake to someone else.
CREATE FUNCTION @extschema@._require_operator(action text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = session_user AND r.rolsuper)
     AND NOT pg_catalog.pg_has_role(session_user, 'safe_upgrade_operator', 'MEMBER') THEN
    RAISE EXCEPTION USING ERRCODE = '42501',
      MESSAGE = format('permission denied to %s', $1),
      HINT = format('Only superusers and members of safe_upgrade_operator may do this; '
                    'ask an administrator to run GRANT safe_upgrade_operator TO %I.',
                    session_user);
  END IF;
END
$fn$;

-- begin() options with their defaults filled in and their values checked and normalized:
-- booleans as JSON booleans, not_before as a timestamp, lock_timeout as "<n>ms" (what both an
-- interval and the lock_timeout setting accept), max_lock_retries as a JSON number.
CREATE FUNCTION @extschema@._normalize_options(options jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_in jsonb := coalesce($1, '{}'::jsonb);
  v_out jsonb := '{}'::jsonb;
  v_key text;
  v_value jsonb;
  v_text text;
  v_ts timestamptz;
  v_interval interval;
  v_ms numeric;
  v_int numeric;
  c_keys constant text[] := ARRAY['dry_run_only', 'auto_rollback', 'require_approval', 'not_before',
                                  'lock_timeout', 'max_lock_retries', 'rollback_target', 'databases'];
  c_valid constant text := 'Valid options are dry_run_only, auto_rollback, require_approval (booleans), '
                           'not_before (a timestamp), lock_timeout (an interval such as "2s"), '
                           'max_lock_retries (0 to 100), rollback_target (auto, ready or cold) and databases '
                           '(a JSON array of database names).';
BEGIN
  IF jsonb_typeof(v_in) <> 'object' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('options must be a JSON object, not %s',
                                                              jsonb_typeof(v_in)),
      HINT = 'Pass options as an object, for example ''{"dry_run_only": true}''.';
  END IF;
  FOR v_key IN SELECT k FROM jsonb_object_keys(v_in) AS k ORDER BY k LOOP
    IF NOT v_key = ANY (c_keys) THEN
      RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('unknown option "%s"',
                                                                @extschema@._for_message(v_key)),
        HINT = c_valid;
    END IF;
  END LOOP;

  FOREACH v_key IN ARRAY ARRAY['dry_run_only', 'auto_rollback', 'require_approval'] LOOP
    v_value := v_in -> v_key;
    IF v_value IS NULL OR v_value = 'null'::jsonb THEN
      v_out := v_out || jsonb_build_object(v_key, v_key = 'auto_rollback');
    ELSIF jsonb_typeof(v_value) = 'boolean' THEN
      v_out := v_out || jsonb_build_object(v_key, v_value);
    ELSIF jsonb_typeof(v_value) = 'string' AND lower(v_value #>> '{}') IN ('true', 'on', 'false', 'off') THEN
      v_out := v_out || jsonb_build_object(v_key, lower(v_value #>> '{}') IN ('true', 'on'));
    ELSE
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('option "%s" must be a boolean, not %s', v_key, @extschema@._for_message(v_value::text)),
        HINT = format('Use true or false, for example ''{"%s": true}''.', v_key);
    END IF;
  END LOOP;

  v_value := v_in -> 'not_before';
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_ts := now();
  ELSE
    v_text := CASE WHEN jsonb_typeof(v_value) = 'string' THEN v_value #>> '{}' END;
    BEGIN
      v_ts := v_text::timestamptz;
    EXCEPTION WHEN data_exception THEN
      v_ts := NULL;
    END;
    IF v_ts IS NULL OR NOT isfinite(v_ts) THEN
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('option "not_before" must be a timestamp, not %s', @extschema@._for_message(v_value::text)),
        HINT = 'Use a finite timestamp with a time zone, for example ''{"not_before": "2030-01-01 02:00:00+00"}''.';
    END IF;
  END IF;
  v_out := v_out || jsonb_build_object('not_before', v_ts);

  v_value := v_in -> 'lock_timeout';
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_interval := interval '2 seconds';
  ELSE
    v_text := CASE WHEN jsonb_typeof(v_value) = 'string' THEN v_value #>> '{}' END;
    BEGIN
      v_interval := v_text::interval;
    EXCEPTION WHEN data_exception THEN
      v_interval := NULL;
    END;
  END IF;
  v_ms := round(extract(epoch FROM v_interval) * 1000);
  IF v_ms IS NULL OR v_ms < 1 OR v_ms > 3600000 THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('option "lock_timeout" must be an interval between 1ms and 1 hour, not %s',
                       @extschema@._for_message(v_value::text)),
      HINT = 'Use an interval string, for example ''{"lock_timeout": "2s"}''; '
             'the upgrade gives up waiting for a lock after it and retries.';
  END IF;
  v_out := v_out || jsonb_build_object('lock_timeout', v_ms::bigint || 'ms');

  v_value := v_in -> 'max_lock_retries';
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_int := 5;
  ELSIF jsonb_typeof(v_value) = 'number' THEN
    v_int := v_value::numeric;
  ELSIF jsonb_typeof(v_value) = 'string' AND (v_value #>> '{}') ~ '^\s*[0-9]{1,3}\s*$' THEN
    v_int := (v_value #>> '{}')::numeric;
  END IF;
  IF v_int IS NULL OR v_int <> trunc(v_int) OR v_int < 0 OR v_int > 100 THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('option "max_lock_retries" must be an integer between 0 and 100, not %s',
                       @extschema@._for_message(v_value::text)),
      HINT = 'Use a whole number, for example ''{"max_lock_retries": 5}''.';
  END IF;
  v_out := v_out || jsonb_build_object('max_lock_retries', v_int::integer);

  v_value := v_in -> 'rollback_target';
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_out := v_out || jsonb_build_object('rollback_target', 'auto');
  ELSIF jsonb_typeof(v_value) = 'string' AND lower(v_value #>> '{}') IN ('auto', 'ready', 'cold') THEN
    v_out := v_out || jsonb_build_object('rollback_target', lower(v_value #>> '{}'));
  ELSE
    RAISE EXCEPTION USING ERRCODE = '22023',
      MESSAGE = format('option "rollback_target" must be auto, ready or cold, not %s',
                       @extschema@._for_message(v_value::text)),
      HINT = 'Use "auto" (a parked target when the disk allows), "ready" (require one) or "cold" '
             '(restore the snapshot), for example ''{"rollback_target": "cold"}''.';
  END IF;

  v_value := v_in -> 'databases';
  IF v_value IS NOT NULL AND v_value <> 'null'::jsonb THEN
    IF jsonb_typeof(v_value) <> 'array' OR jsonb_array_length(v_value) = 0
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_value) x
                   WHERE jsonb_typeof(x) <> 'string' OR btrim(x #>> '{}') = '') THEN
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('option "databases" must be a non-empty JSON array of database names, not %s',
                         @extschema@._for_message(v_value::text)),
        HINT = 'Name the databases to upgrade, for example ''{"databases": ["app", "reporting"]}'', '
               'or leave the option out to upgrade the extension in every database that has it.';
    END IF;
    IF (SELECT count(DISTINCT x) <> count(*) FROM jsonb_array_elements_text(v_value) x) THEN
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('option "databases" names a database twice: %s', @extschema@._for_message(v_value::text)),
        HINT = 'Name each database once.';
    END IF;
    v_out := v_out || jsonb_build_object('databases',
                                         (SELECT jsonb_agg(x ORDER BY x) FROM jsonb_array_elements_text(v_value) x));
  END IF;
  RETURN v_out;
END
$fn$;

-- The prerequisites of an upgrade: a primary whose scheduler serves this database, and point-in-
-- time recovery (settings, the agent as the worker last saw it, disk). SECURITY DEFINER so that
-- plan() shows every user the size of the whole cluster (what a base backup copies), which
-- pg_database_size() only tells roles that may connect to each database. It takes no arguments
-- and returns only facts.
CREATE FUNCTION @extschema@._prerequisites()
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  a record;
  v_wal_level text := current_setting('wal_level');
  v_archive_mode text := current_setting('archive_mode');
  v_archive_command text := current_setting('archive_command');
  v_archive_library text := current_setting('archive_library');
  v_db_size bigint := pg_catalog.pg_database_size(current_database());
  v_cluster_size bigint;
  v_system_id numeric;
  v_enough boolean;
  v_failing boolean;
  v_archiver record;
  v_in_recovery boolean := pg_catalog.pg_is_in_recovery();
  v_scheduler_db text := current_setting('safe_upgrade.database', true);
  v_tablespaces jsonb;
  v_bad_tablespaces text;
  v_method text;
  v_extra jsonb;
  v_snapshot_need bigint;
  v_reasons text[] := '{}';
  v_hints text[] := '{}';
BEGIN
  SELECT sum(pg_catalog.pg_database_size(d.oid))::bigint INTO v_cluster_size FROM pg_catalog.pg_database d;
  SELECT s.system_identifier INTO v_system_id FROM pg_catalog.pg_control_system() s;
  SELECT * INTO a FROM @extschema@.agent_status();
  SELECT coalesce(s.last_failed_time > coalesce(s.last_archived_time, '-infinity'), false) INTO v_failing
    FROM pg_catalog.pg_stat_archiver s;
  SELECT s.last_archived_wal, s.last_archived_time INTO v_archiver FROM pg_catalog.pg_stat_archiver s;

  -- The extra disk a snapshot takes in snapshot_dir, by method (the agent's SnapshotExtraBytes):
  -- basebackup copies the cluster; reflink shares its extents and adds the WAL copied from the
  -- archive (four segments) and the filesystem's metadata (1/200 of the cluster at most).
  v_method := coalesce(a.snapshot_method, 'basebackup');
  v_extra := jsonb_build_object(
    'basebackup_bytes', v_cluster_size,
    'reflink_bytes', 4 * (SELECT s.setting::bigint FROM pg_catalog.pg_settings s WHERE s.name = 'wal_segment_size')
               + v_cluster_size / 200);
  v_snapshot_need := (v_extra ->> (v_method || '_bytes'))::bigint;

  IF v_in_recovery THEN
    v_reasons := v_reasons || 'this server is a standby (in recovery); extensions are upgraded on the primary'::text;
    v_hints := v_hints || 'Run safe_upgrade.begin() on the primary.'::text;
  END IF;
  IF v_scheduler_db IS DISTINCT FROM current_database() THEN
    v_reasons := v_reasons || format('the safe_upgrade scheduler runs in database "%s", not in "%s", '
                                     'so nothing would act on the upgrade',
                                     v_scheduler_db, current_database());
    v_hints := v_hints || format('Call safe_upgrade.begin() in database "%s", '
                                 'or set safe_upgrade.database = ''%s'' and restart the server.',
                                 v_scheduler_db, current_database());
  END IF;
  IF a.worker_pid IS NULL THEN
    v_reasons := v_reasons || 'the safe_upgrade scheduler (background worker) is not running'::text;
    v_hints := v_hints || 'Check the server log for why it stopped; '
                          'the postmaster restarts it within seconds, or restart the server.'::text;
  END IF;
  IF v_wal_level NOT IN ('replica', 'logical') THEN
    v_reasons := v_reasons || format('wal_level is %s; point-in-time recovery needs replica or logical', v_wal_level);
    v_hints := v_hints || 'Set wal_level = replica and restart the server.'::text;
  END IF;
  IF v_archive_mode = 'off' THEN
    v_reasons := v_reasons || 'archive_mode is off, so no WAL is archived for point-in-time recovery'::text;
    v_hints := v_hints || 'Set archive_mode = on with an archive_command '
                          '(the agent''s "safe-upgrade-agent wal-push") and restart the server.'::text;
  ELSIF coalesce(v_archive_command, '') IN ('', '(disabled)') AND coalesce(v_archive_library, '') = '' THEN
    v_reasons := v_reasons || 'archive_mode is on but neither archive_command nor archive_library is set'::text;
    v_hints := v_hints || 'Set archive_command to the agent''s "safe-upgrade-agent wal-push --config <file> %p" '
                          'and reload the configuration.'::text;
  END IF;
  IF NOT coalesce(a.reachable, false) THEN
    v_reasons := v_reasons || format('the safe-upgrade agent is unreachable: %s',
                                     coalesce(a.last_error, 'no answer'));
    v_hints := v_hints || 'Start safe-upgrade-agent (or point safe_upgrade.agent_address at it) '
                          'and check SELECT * FROM safe_upgrade.agent_status().'::text;
  ELSE
    IF a.system_identifier IS DISTINCT FROM v_system_id THEN
      v_reasons := v_reasons || format('the agent serves another cluster (system identifier %s; this cluster is %s)',
                                       a.system_identifier, v_system_id);
      v_hints := v_hints || 'Point safe_upgrade.agent_address at the agent that runs beside this cluster.'::text;
    END IF;
    IF NOT coalesce(a.wal_archive_writable, false) THEN
      v_reasons := v_reasons || 'the agent cannot write to its WAL archive directory'::text;
      v_hints := v_hints || 'Make the agent''s wal_archive_dir writable by the OS user that runs the agent.'::text;
    END IF;
    -- A rollback replays WAL from the agent's archive. A file the server says it archived well
    -- before the agent last looked must be there; if it is not, archive_command archives somewhere
    -- else, or nowhere (''/bin/true''), and no rollback could work.
    IF a.wal_archive_files IS NOT NULL AND v_archiver.last_archived_wal IS NOT NULL
       AND v_archiver.last_archived_time < a.checked_at - interval '1 second'
       AND (a.wal_archive_newest IS NULL
            OR v_archiver.last_archived_wal::text COLLATE "C" > a.wal_archive_newest COLLATE "C") THEN
      v_reasons := v_reasons || format(
        'the server reports WAL file %s as archived, but the agent''s WAL archive %s, so archive_command '
        'does not archive into the archive a rollback reads',
        v_archiver.last_archived_wal,
        CASE WHEN a.wal_archive_newest IS NULL THEN 'is empty'
             ELSE format('ends at %s', a.wal_archive_newest) END);
      v_hints := v_hints || 'Set archive_command to the agent''s "safe-upgrade-agent wal-push --config <file> %p", '
                            'reload the configuration, then run SELECT pg_switch_wal() and plan again.'::text;
    END IF;
    IF NOT coalesce(a.snapshot_method_possible, true) THEN
      v_reasons := v_reasons || format('the snapshot cannot be taken: %s', a.snapshot_method_reason);
      v_hints := v_hints || 'Put the data directory, the agent''s snapshot_dir and work_dir on one filesystem that '
                            'clones extents (XFS with reflink, btrfs), or set snapshot_method = "auto" in the '
                            'agent''s configuration and restart it.'::text;
    END IF;
    v_enough := a.snapshot_free_bytes >= v_snapshot_need + coalesce(a.disk_reserve_bytes, 0);
    IF NOT coalesce(v_enough, false) THEN
      v_reasons := v_reasons || format(
        'not enough free disk for the snapshot: %s free where the agent keeps snapshots, '
        '%s needed (%s for a %s snapshot of %s of data, plus a reserve of %s)',
        pg_catalog.pg_size_pretty(a.snapshot_free_bytes),
        pg_catalog.pg_size_pretty(v_snapshot_need + coalesce(a.disk_reserve_bytes, 0)),
        pg_catalog.pg_size_pretty(v_snapshot_need), v_method,
        pg_catalog.pg_size_pretty(v_cluster_size), pg_catalog.pg_size_pretty(coalesce(a.disk_reserve_bytes, 0)));
      v_hints := v_hints || 'Free space in the agent''s snapshot_dir, '
                            'or lower disk_reserve_mb in the agent''s configuration.'::text;
    END IF;
  END IF;

  -- Tablespaces are snapshotted, cloned and restored at their own locations (outside the data
  -- directory); one at a relative path or inside the data directory could not be put back.
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', t.spcname, 'location', l.location) ORDER BY t.spcname), '[]')
    INTO v_tablespaces
    FROM pg_catalog.pg_tablespace t, LATERAL (SELECT pg_catalog.pg_tablespace_location(t.oid) AS location) l
   WHERE t.spcname NOT IN ('pg_default', 'pg_global');
  SELECT string_agg(format('%s (%s)', x ->> 'name', x ->> 'location'), ', ') INTO v_bad_tablespaces
    FROM jsonb_array_elements(v_tablespaces) x
   WHERE x ->> 'location' <> ''
     AND (x ->> 'location' NOT LIKE '/%'
          OR x ->> 'location' = current_setting('data_directory')
          OR starts_with(x ->> 'location', current_setting('data_directory') || '/'));
  IF v_bad_tablespaces IS NOT NULL THEN
    v_reasons := v_reasons || format('tablespace %s is at a relative path or inside the data directory, '
                                     'where a rollback could not put it back', v_bad_tablespaces);
    v_hints := v_hints || 'Move the tablespace to an absolute location outside the data directory '
                          '(ALTER TABLE ... SET TABLESPACE to a new one), then plan again.'::text;
  END IF;

  RETURN jsonb_build_object(
    'wal_level', v_wal_level,
    'archive_mode', v_archive_mode,
    'archive_command', v_archive_command,
    'archive_library', v_archive_library,
    'archiver_failing', v_failing,
    'agent_reachable', coalesce(a.reachable, false),
    'agent_error', a.last_error,
    'agent_address', a.address,
    'agent_checked_at', a.checked_at,
    'wal_archive_writable', a.wal_archive_writable,
    'snapshot_free_bytes', a.snapshot_free_bytes,
    'disk_reserve_bytes', a.disk_reserve_bytes,
    'data_free_bytes', a.data_free_bytes,
    'snapshot_method', a.snapshot_method,
    'snapshot_method_configured', a.snapshot_method_configured,
    'snapshot_method_reason', a.snapshot_method_reason,
    'snapshot_extra_disk', v_extra,
    'snapshot_disk_needed_bytes', v_snapshot_need,
    'wal_archive', jsonb_build_object(
      'files', a.wal_archive_files,
      'bytes', a.wal_archive_bytes,
      'oldest_segment', a.wal_archive_oldest,
      'newest_file', a.wal_archive_newest,
      'needed_from', a.wal_needed_from,
      'server_last_archived', v_archiver.last_archived_wal,
      'note', 'segments before needed_from serve no kept snapshot and are pruned after each snapshot'),
    'database_size_bytes', v_db_size,
    'cluster_size_bytes', v_cluster_size,
    'enough_disk', v_enough,
    'scheduler_enabled', coalesce(current_setting('safe_upgrade.enabled', true), 'on') = 'on',
    'scheduler_database', v_scheduler_db,
    'scheduler_running', a.worker_pid IS NOT NULL,
    'in_recovery', v_in_recovery,
    'tablespaces', v_tablespaces,
    'reasons', to_jsonb(v_reasons),
    'hints', to_jsonb(v_hints));
END
$fn$;

-- Read-only preflight report: what begin() would do, what it needs, and what a rollback costs.
CREATE FUNCTION @extschema@.plan(extname name, target_version text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_ext name := $1;
  v_target text := $2;
  v_selection jsonb;
  v_databases jsonb;
  v_versions text[];
  v_paths jsonb[];
  v_requires jsonb;
  v_required_by jsonb;
  v_dependents jsonb;
  v_untouched jsonb;
  v_pitr jsonb;
  v_in_flight record;
  v_reasons text[];
  v_hints text[];
  v_snapshot_bytes bigint;
  v_data_free bigint;
  v_auto_mode text;
BEGIN
  v_selection := @extschema@._select_databases(v_ext, v_target, NULL);
  -- SECURITY DEFINER reads every database; the caller sees the dependents only of those it may
  -- connect to (their count otherwise).
  SELECT coalesce(jsonb_agg(CASE WHEN pg_catalog.has_database_privilege(session_user, d ->> 'datname', 'CONNECT')
                                 THEN d ELSE d - 'dependents' || jsonb_build_object(
                                   'dependents', '[]'::jsonb,
                                   'dependents_hidden', jsonb_array_length(d -> 'dependents')) END
                            ORDER BY d ->> 'datname'), '[]'::jsonb)
    INTO v_databases FROM jsonb_array_elements(v_selection -> 'databases') d;
  SELECT array_agg(DISTINCT d ->> 'installed_version'), array_agg(DISTINCT d -> 'update_path')
    INTO v_versions, v_paths FROM jsonb_array_elements(v_databases) d;
  SELECT coalesce(jsonb_agg(r ORDER BY r), '[]'::jsonb) INTO v_requires
    FROM pg_catalog.pg_available_extension_versions v, unnest(v.requires) AS r
   WHERE v.name = v_ext AND v.version = v_target;
  SELECT coalesce(jsonb_agg(DISTINCT x), '[]'::jsonb) INTO v_required_by
    FROM jsonb_array_elements(v_databases) d, jsonb_array_elements(d -> 'required_by') x;
  SELECT coalesce(jsonb_agg(r || jsonb_build_object('datname', d ->> 'datname')
                            ORDER BY d ->> 'datname', r ->> 'object_type', r ->> 'object_identity'), '[]'::jsonb)
    INTO v_dependents FROM jsonb_array_elements(v_databases) d, jsonb_array_elements(d -> 'dependents') r;
  SELECT coalesce(jsonb_agg(db.datname::text ORDER BY db.datname), '[]'::jsonb) INTO v_untouched
    FROM pg_catalog.pg_database db
   WHERE NOT db.datistemplate
     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_databases) d WHERE d ->> 'datname' = db.datname::text);

  v_pitr := @extschema@._prerequisites();
  SELECT coalesce(array_agg(x), '{}') INTO v_reasons FROM jsonb_array_elements_text(v_pitr -> 'reasons') x;
  SELECT coalesce(array_agg(x), '{}') INTO v_hints FROM jsonb_array_elements_text(v_pitr -> 'hints') x;
  SELECT u.id, u.state INTO v_in_flight FROM @extschema@.upgrades u
   WHERE u.extname = v_ext AND u.state = ANY (@extschema@._in_flight_states()) ORDER BY u.id LIMIT 1;
  IF FOUND THEN
    v_reasons := v_reasons || format('upgrade %s of %s is already in flight (%s)',
                                     v_in_flight.id, v_ext, v_in_flight.state);
    v_hints := v_hints || format('Wait for upgrade %s with safe_upgrade.wait(%s), '
                                 'or cancel it with safe_upgrade.cancel(%s).',
                                 v_in_flight.id, v_in_flight.id, v_in_flight.id);
  END IF;

  v_snapshot_bytes := (v_pitr ->> 'cluster_size_bytes')::bigint;
  v_data_free := (v_pitr ->> 'data_free_bytes')::bigint;
  v_auto_mode := CASE WHEN v_data_free IS NULL THEN 'unknown (the agent is unreachable)'
                      WHEN v_data_free >= v_snapshot_bytes + coalesce((v_pitr ->> 'disk_reserve_bytes')::bigint, 0)
                      THEN 'ready' ELSE 'cold' END;
  RETURN jsonb_build_object(
    'extname', v_ext,
    -- One version and path when every database to upgrade agrees; null otherwise (see databases).
    'installed_version', CASE WHEN cardinality(v_versions) = 1 THEN v_versions[1] END,
    'target_version', v_target,
    'update_path', CASE WHEN cardinality(v_paths) = 1 THEN v_paths[1] END,
    'databases', (SELECT jsonb_agg(jsonb_build_object(
                    'datname', d ->> 'datname', 'installed_version', d ->> 'installed_version',
                    'update_path', d -> 'update_path', 'required_by', d -> 'required_by',
                    'dependents', jsonb_array_length(d -> 'dependents') + coalesce((d ->> 'dependents_hidden')::int, 0))
                    ORDER BY d ->> 'datname')
                  FROM jsonb_array_elements(v_databases) d),
    'skipped_databases', v_selection -> 'skipped',
    'requires', v_requires,
    'required_by', v_required_by,
    'dependents', v_dependents,
    'pitr', v_pitr - 'reasons' - 'hints',
    'rollback', jsonb_build_object(
      'method', 'point-in-time recovery: restore the snapshot taken before the upgrade, '
                'then replay the archived WAL up to the restore point created just before the apply',
      'snapshot_bytes', v_snapshot_bytes,
      'rollback_target', jsonb_build_object(
        'option', 'rollback_target',
        'default', 'auto',
        'auto_would_use', v_auto_mode,
        'ready_disk_bytes', v_snapshot_bytes,
        'data_free_bytes', v_data_free,
        'ready', format('a copy of the snapshot (%s) next to the data directory follows the WAL archive and parks '
                        'at the restore point while the upgrade is applied and verified; a rollback is then '
                        'stop, swap and start, seconds whatever the database size',
                        pg_catalog.pg_size_pretty(v_snapshot_bytes)),
        'cold', 'the rollback restores the snapshot and replays WAL; no extra disk until then, '
                'but the downtime grows with the database size'),
      'cost', CASE WHEN v_auto_mode = 'ready'
                   THEN format('with the parked target (rollback_target auto or ready): stop, swap and start, '
                               'seconds; it holds %s more disk next to the data directory during the apply '
                               'and verification; the server restarts on a new timeline',
                               pg_catalog.pg_size_pretty(v_snapshot_bytes))
                   ELSE format('restore snapshot of %s bytes (%s) + WAL replay up to the restore point; '
                               'the server is down meanwhile and restarts on a new timeline',
                               v_snapshot_bytes, pg_catalog.pg_size_pretty(v_snapshot_bytes)) END,
      'loses', 'every write committed after the restore point, in every database of the cluster, '
               'including writes made by the upgraded version and writes to databases this upgrade does not '
               'change; the data directory it replaces is kept aside, not deleted',
      'databases_rewound_but_not_upgraded', v_untouched),
    'in_flight_upgrade', CASE WHEN v_in_flight.id IS NULL THEN NULL
                              ELSE jsonb_build_object('id', v_in_flight.id, 'state', v_in_flight.state) END,
    'verdict', CASE WHEN cardinality(v_reasons) = 0 THEN 'ok' ELSE 'blocked' END,
    'reasons', to_jsonb(v_reasons),
    'hints', to_jsonb(v_hints));
END
$fn$;

-- Queues an upgrade for the background worker and returns its id.
CREATE FUNCTION @extschema@.begin(extname name, target_version text, options jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_ext name := $1;
  v_target text := $2;
  v_selection jsonb;
  v_from text;
  v_path text[];
  v_databases text;
  v_options jsonb;
  v_other record;
  v_pitr jsonb;
  v_reasons text;
  v_hints text;
  v_id bigint;
  v_constraint text;
BEGIN
  PERFORM @extschema@._require_operator('begin an upgrade');
  v_options := @extschema@._normalize_options($3);
  v_selection := @extschema@._select_databases(
    v_ext, v_target, (SELECT array_agg(x) FROM jsonb_array_elements_text(v_options -> 'databases') x));
  -- One version and path when every database agrees; each database's own are in upgrade_databases.
  SELECT string_agg(DISTINCT d ->> 'installed_version', ', '),
         CASE WHEN count(DISTINCT d -> 'update_path') = 1
              THEN (SELECT array_agg(p) FROM jsonb_array_elements_text(min((d -> 'update_path')::text)::jsonb) p) END,
         string_agg(d ->> 'datname', ', ' ORDER BY d ->> 'datname')
    INTO v_from, v_path, v_databases
    FROM jsonb_array_elements(v_selection -> 'databases') d;

  SELECT u.id, u.state INTO v_other FROM @extschema@.upgrades u
   WHERE u.extname = v_ext AND u.state = ANY (@extschema@._in_flight_states()) ORDER BY u.id LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '55006',
      MESSAGE = format('upgrade %s of extension "%s" is already in flight (%s)', v_other.id, v_ext, v_other.state),
      HINT = format('Wait for it with SELECT safe_upgrade.wait(%s), or cancel it with SELECT safe_upgrade.cancel(%s), '
                    'then begin again.',
                    v_other.id, v_other.id);
  END IF;

  v_pitr := @extschema@._prerequisites();
  IF jsonb_array_length(v_pitr -> 'reasons') > 0 THEN
    SELECT string_agg(x, '; ') INTO v_reasons FROM jsonb_array_elements_text(v_pitr -> 'reasons') x;
    SELECT string_agg(x, ' ') INTO v_hints FROM jsonb_array_elements_text(v_pitr -> 'hints') x;
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('cannot upgrade extension "%s": the prerequisites of a recoverable upgrade are missing',
                       v_ext),
      DETAIL = v_reasons, HINT = v_hints;
  END IF;

  BEGIN
    INSERT INTO @extschema@.upgrades (extname, from_version, to_version, update_path, options, not_before)
    VALUES (v_ext, v_from, v_target, coalesce(v_path, '{}'), v_options,
            (v_options ->> 'not_before')::timestamptz)
    RETURNING id INTO v_id;
  EXCEPTION WHEN unique_violation THEN
    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
    IF v_constraint IS DISTINCT FROM 'upgrades_one_in_flight' THEN
      RAISE;
    END IF;
    -- Another session's begin() committed first; this statement's snapshot shows its row.
    SELECT u.id, u.state INTO v_other FROM @extschema@.upgrades u
     WHERE u.extname = v_ext AND u.state = ANY (@extschema@._in_flight_states()) ORDER BY u.id LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = '55006',
      MESSAGE = format('upgrade %s of extension "%s" is already in flight (%s)',
                       coalesce(v_other.id::text, 'another'), v_ext, coalesce(v_other.state, 'queued')),
      HINT = 'Another session began an upgrade of this extension at the same moment; '
             'wait for it with safe_upgrade.wait() or cancel it, then begin again.';
  END;

  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail)
  VALUES (v_id, 'queued', 'info',
          format('upgrade of %s from %s to %s in database %s queued by %s',
                 v_ext, v_from, v_target, v_databases, session_user),
          jsonb_build_object('databases', (SELECT jsonb_agg(jsonb_build_object(
                                              'datname', d -> 'datname', 'from_version', d -> 'installed_version',
                                              'update_path', d -> 'update_path'))
                                             FROM jsonb_array_elements(v_selection -> 'databases') d),
                             'skipped_databases', v_selection -> 'skipped', 'options', v_options,
                             'requested_by', session_user));
  INSERT INTO @extschema@.upgrade_databases (upgrade_id, datname, from_version, update_path)
  SELECT v_id, d ->> 'datname', d ->> 'installed_version',
         ARRAY(SELECT jsonb_array_elements_text(d -> 'update_path'))
    FROM jsonb_array_elements(v_selection -> 'databases') d;
  INSERT INTO @extschema@.dependency_snapshots (upgrade_id, datname, phase, object_type, object_schema,
                                               object_identity, depends_on_type, depends_on_identity, deptype)
  SELECT v_id, d ->> 'datname', 'before', r ->> 'object_type', r ->> 'object_schema', r ->> 'object_identity',
         r ->> 'depends_on_type', r ->> 'depends_on_identity', (r ->> 'deptype')::"char"
    FROM jsonb_array_elements(v_selection -> 'databases') d, jsonb_array_elements(d -> 'dependents') r
  ON CONFLICT DO NOTHING;

  IF NOT (v_pitr -> 'scheduler_enabled')::boolean THEN
    RAISE NOTICE 'safe_upgrade.enabled is off, so upgrade % stays queued until the scheduler is enabled', v_id;
  END IF;
  PERFORM @extschema@._wake_worker_at_commit();
  RETURN v_id;
END
$fn$;

-- Loads an upgrade row or raises 22023; FOR UPDATE when the caller is about to change it.
CREATE FUNCTION @extschema@._upgrade_or_error(upgrade_id bigint, for_update boolean)
RETURNS @extschema@.upgrades LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_row @extschema@.upgrades;
BEGIN
  IF $1 IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'upgrade id must not be null',
      HINT = 'Pass the id that safe_upgrade.begin() returned.';
  END IF;
  IF $2 THEN
    SELECT * INTO v_row FROM @extschema@.upgrades u WHERE u.id = $1 FOR UPDATE;
  ELSE
    SELECT * INTO v_row FROM @extschema@.upgrades u WHERE u.id = $1;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('upgrade %s does not exist', $1),
      HINT = 'List the upgrades with SELECT id, extname, state FROM safe_upgrade.upgrades ORDER BY id DESC.';
  END IF;
  RETURN v_row;
END
$fn$;

-- The whole story of one upgrade: its row, its events, its restore point, the drift of the
-- objects that depend on the extension (before vs after the upgrade, once the dry run has run).
CREATE FUNCTION @extschema@.status(upgrade_id bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_row @extschema@.upgrades;
  v_events jsonb;
  v_restore_point jsonb;
  v_drift jsonb;
  v_databases jsonb;
BEGIN
  v_row := @extschema@._upgrade_or_error($1, false);
  SELECT coalesce(jsonb_agg(to_jsonb(d) - 'upgrade_id' ORDER BY d.datname), '[]'::jsonb) INTO v_databases
    FROM @extschema@.upgrade_databases d WHERE d.upgrade_id = v_row.id;
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'at', e.at, 'phase', e.phase, 'level', e.level,
                                               'message', e.message, 'detail', e.detail) ORDER BY e.id), '[]'::jsonb)
    INTO v_events FROM @extschema@.events e WHERE e.upgrade_id = v_row.id;
  SELECT to_jsonb(rp) - 'upgrade_id' INTO v_restore_point
    FROM @extschema@.restore_points rp WHERE rp.upgrade_id = v_row.id;

  -- "after" rows exist only once the dry run has reported them; before that there is no drift
  -- to show, which is not the same as an empty one.
  IF v_row.report -> 'dry_run' ? 'dependency_after' OR v_row.report -> 'dry_run' ? 'databases'
     OR EXISTS (SELECT 1 FROM @extschema@.dependency_snapshots s
                 WHERE s.upgrade_id = v_row.id AND s.phase = 'after') THEN
    WITH b AS (SELECT datname, object_type, object_schema, object_identity, depends_on_type, depends_on_identity,
                      deptype
                 FROM @extschema@.dependency_snapshots WHERE upgrade_id = v_row.id AND phase = 'before'),
         a AS (SELECT datname, object_type, object_schema, object_identity, depends_on_type, depends_on_identity,
                      deptype
                 FROM @extschema@.dependency_snapshots WHERE upgrade_id = v_row.id AND phase = 'after')
    SELECT jsonb_build_object(
             'compared', true,
             'before_count', (SELECT count(*) FROM b),
             'after_count', (SELECT count(*) FROM a),
             'added', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.datname, x.object_type, x.object_identity), '[]'::jsonb)
                         FROM (SELECT * FROM a EXCEPT SELECT * FROM b) x),
             'removed', (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.datname, x.object_type, x.object_identity), '[]'::jsonb)
                           FROM (SELECT * FROM b EXCEPT SELECT * FROM a) x))
      INTO v_drift;
  ELSE
    v_drift := jsonb_build_object(
      'compared', false,
      'before_count', (SELECT count(*) FROM @extschema@.dependency_snapshots s
                        WHERE s.upgrade_id = v_row.id AND s.phase = 'before'),
      'added', '[]'::jsonb, 'removed', '[]'::jsonb);
  END IF;

  RETURN to_jsonb(v_row) || jsonb_build_object(
    'terminal', v_row.state = ANY (@extschema@._terminal_states()),
    'databases', v_databases,
    'events', v_events,
    'restore_point', v_restore_point,
    'dependency_drift', v_drift);
END
$fn$;

-- Waits for an upgrade to reach a terminal state and returns it; on timeout returns the current
-- state with a WARNING. Runs one statement per poll so that, under READ COMMITTED, each poll sees
-- what the worker committed meanwhile.
CREATE FUNCTION @extschema@.wait(upgrade_id bigint, timeout interval DEFAULT '1 hour')
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_id bigint := $1;
  v_timeout interval := $2;
  v_row @extschema@.upgrades;
  v_xmin bigint;
  v_ref bigint;
  v_diff bigint;
  v_xact_status text;
  v_deadline timestamptz;
  v_state text;
BEGIN
  IF v_timeout IS NULL OR v_timeout < interval '0' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'timeout must be a non-negative interval',
      HINT = 'Pass an interval such as ''10 minutes'', or leave it out to wait up to an hour.';
  END IF;
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION USING ERRCODE = '25001',
      MESSAGE = format('wait() cannot follow an upgrade under %s isolation',
                       upper(current_setting('transaction_isolation'))),
      HINT = 'Its snapshot would never show the scheduler''s progress; '
             'call safe_upgrade.wait() in a READ COMMITTED transaction, for example in autocommit mode.';
  END IF;
  v_row := @extschema@._upgrade_or_error(v_id, false);

  -- A row whose inserting (or last updating) transaction is still in progress and that we can see
  -- was written by this very transaction: the worker cannot see it, or would block on its lock,
  -- until we commit, so waiting could only time out. xmin is 32 bits; widen it next to the
  -- current xid horizon to ask pg_xact_status().
  SELECT u.xmin::text::bigint INTO v_xmin FROM @extschema@.upgrades u WHERE u.id = v_id;
  IF v_xmin >= 3 THEN
    v_ref := pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint;
    v_diff := v_xmin - (v_ref & 4294967295);
    IF v_diff > 2147483647 THEN v_diff := v_diff - 4294967296; END IF;
    IF v_diff < -2147483648 THEN v_diff := v_diff + 4294967296; END IF;
    BEGIN
      v_xact_status := pg_catalog.pg_xact_status((v_ref + v_diff)::text::xid8);
    EXCEPTION WHEN OTHERS THEN
      v_xact_status := NULL;  -- too old to tell (its commit log was truncated): not ours
    END;
    IF v_xact_status = 'in progress' THEN
      RAISE EXCEPTION USING ERRCODE = '25001',
        MESSAGE = format('upgrade %s was created or changed by the current transaction, '
                         'which the scheduler cannot see yet', v_id),
        HINT = 'COMMIT after begin(), then call wait() in a new transaction.';
    END IF;
  END IF;

  v_deadline := clock_timestamp() + v_timeout;
  LOOP
    SELECT u.state INTO v_state FROM @extschema@.upgrades u WHERE u.id = v_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('upgrade %s does not exist any more', v_id),
        HINT = 'A point-in-time recovery may have rewound the catalog; '
               'check SELECT * FROM safe_upgrade.upgrades ORDER BY id DESC.';
    END IF;
    IF v_state = ANY (@extschema@._terminal_states()) THEN
      RETURN v_state;
    END IF;
    IF clock_timestamp() >= v_deadline THEN
      RAISE WARNING USING MESSAGE = format('upgrade %s is still %s after waiting %s', v_id, v_state, v_timeout),
        HINT = format('Call safe_upgrade.wait(%s) again, or see its progress with SELECT safe_upgrade.status(%s).',
                      v_id, v_id);
      RETURN v_state;
    END IF;
    PERFORM pg_catalog.pg_sleep(least(0.2, greatest(0.0, extract(epoch FROM v_deadline - clock_timestamp()))));
  END LOOP;
END
$fn$;

-- Approves an upgrade begun with require_approval, before or while it awaits approval.
CREATE FUNCTION @extschema@.approve(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_row @extschema@.upgrades;
BEGIN
  PERFORM @extschema@._require_operator('approve an upgrade');
  v_row := @extschema@._upgrade_or_error($1, true);
  IF NOT coalesce((v_row.options ->> 'require_approval')::boolean, false) THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('upgrade %s does not require approval', v_row.id),
      HINT = 'Only upgrades begun with ''{"require_approval": true}'' wait for approval; '
             'this one proceeds on its own.';
  END IF;
  IF v_row.approved_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('upgrade %s was already approved by %s', v_row.id, v_row.approved_by),
      DETAIL = format('It was approved at %s.', v_row.approved_at),
      HINT = format('Nothing to do; follow it with SELECT safe_upgrade.wait(%s).', v_row.id);
  END IF;
  IF v_row.state NOT IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval') THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('cannot approve upgrade %s in state %s',
                                                              v_row.id, v_row.state),
      HINT = format('An upgrade can be approved while it is queued, snapshotting, dry_running or awaiting_approval; '
                    'upgrade %s is %s.',
                    v_row.id, v_row.state);
  END IF;
  UPDATE @extschema@.upgrades u SET approved_at = now(), approved_by = session_user, updated_at = now()
   WHERE u.id = v_row.id;
  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail)
  VALUES (v_row.id, 'approved', 'info', format('approved by %s', session_user),
          jsonb_build_object('approved_by', session_user, 'state', v_row.state));
  PERFORM @extschema@._wake_worker_at_commit();
  RETURN v_row.state;
END
$fn$;

-- Asks the worker to cancel an upgrade that has not touched production.
CREATE FUNCTION @extschema@.cancel(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_row @extschema@.upgrades;
  v_has_restore_point boolean;
BEGIN
  PERFORM @extschema@._require_operator('cancel an upgrade');
  v_row := @extschema@._upgrade_or_error($1, true);
  v_has_restore_point := EXISTS (SELECT 1 FROM @extschema@.restore_points rp WHERE rp.upgrade_id = v_row.id);
  IF v_row.state = ANY (@extschema@._terminal_states()) THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('cannot cancel upgrade %s in state %s',
                                                              v_row.id, v_row.state),
      HINT = CASE WHEN v_row.state = 'succeeded'
                  THEN format('It has already finished; to undo it, use SELECT safe_upgrade.rollback(%s).', v_row.id)
                  ELSE format('Upgrade %s has already finished (%s); there is nothing to cancel.',
                              v_row.id, v_row.state) END;
  END IF;
  IF v_row.state NOT IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled')
     OR (v_row.state = 'scheduled' AND v_has_restore_point) THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('cannot cancel upgrade %s in state %s',
                                                              v_row.id, v_row.state),
      HINT = format('Upgrade %s is %s%s: production may already be changing, so it runs to its end; '
                    'if it fails it is rolled back (auto_rollback), '
                    'or use safe_upgrade.rollback(%s) once it has finished.',
                    v_row.id, v_row.state,
                    CASE WHEN v_has_restore_point THEN ' and its restore point exists' ELSE '' END, v_row.id);
  END IF;
  IF v_row.cancel_requested THEN
    RETURN v_row.state;  -- asked before; asking again changes nothing
  END IF;
  UPDATE @extschema@.upgrades u SET cancel_requested = true, updated_at = now() WHERE u.id = v_row.id;
  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail)
  VALUES (v_row.id, 'cancel_requested', 'info', format('cancellation requested by %s', session_user),
          jsonb_build_object('requested_by', session_user, 'state', v_row.state));
  PERFORM @extschema@._wake_worker_at_commit();
  RETURN v_row.state;
END
$fn$;

-- Rolls back an upgrade that reached production, by point-in-time recovery to its restore point.
CREATE FUNCTION @extschema@.rollback(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_row @extschema@.upgrades;
  v_rp @extschema@.restore_points;
  v_later record;
  v_other record;
  v_constraint text;
  v_version text;
BEGIN
  PERFORM @extschema@._require_operator('roll back an upgrade');
  v_row := @extschema@._upgrade_or_error($1, true);
  IF v_row.state NOT IN ('succeeded', 'failed', 'verifying') THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('cannot roll back upgrade %s in state %s',
                                                              v_row.id, v_row.state),
      HINT = CASE
        WHEN v_row.state IN ('rolling_back', 'rolled_back') THEN format('Upgrade %s is already %s.',
                                                                        v_row.id, v_row.state)
        WHEN v_row.state = ANY (@extschema@._in_flight_states())
          THEN format('Upgrade %s is %s; to stop it before it reaches production use safe_upgrade.cancel(%s), '
                      'and a failure after the apply rolls back by itself (auto_rollback).',
                      v_row.id, v_row.state, v_row.id)
        ELSE format('Only a succeeded or failed upgrade that reached the apply step can be rolled back; '
                    'upgrade %s is %s, so production was not changed by it.',
                    v_row.id, v_row.state) END;
  END IF;
  SELECT * INTO v_rp FROM @extschema@.restore_points rp WHERE rp.upgrade_id = v_row.id;
  IF NOT FOUND OR NOT (v_row.report ? 'apply') THEN
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('cannot roll back upgrade %s: it never reached the apply step', v_row.id),
      HINT = format('Upgrade %s is %s without %s, '
                    'so production was not changed by it and there is nothing to roll back.',
                    v_row.id, v_row.state,
                    CASE WHEN v_rp.upgrade_id IS NULL THEN 'a restore point' ELSE 'an apply' END);
  END IF;
  -- An apply that never committed (a lock timeout, a failing script) left production as it was: a
  -- point-in-time recovery would change nothing of the extension and only discard other writes.
  SELECT e.extversion INTO v_version FROM pg_catalog.pg_extension e WHERE e.extname = v_row.extname;
  -- Committed in at least one database: the whole apply report, each database's outcome, or (when
  -- the agent lost the job) the version installed here.
  IF coalesce((v_row.report #>> '{apply,committed}')::boolean, false) IS NOT TRUE
     AND coalesce((v_row.report #>> '{apply,partially_committed}')::boolean, false) IS NOT TRUE
     AND NOT EXISTS (SELECT 1 FROM @extschema@.upgrade_databases d
                      WHERE d.upgrade_id = v_row.id AND d.outcome IN ('applied', 'verified', 'verify_failed'))
     AND v_version IS DISTINCT FROM v_row.to_version THEN
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('cannot roll back upgrade %s: its apply never committed', v_row.id),
      HINT = format('Extension "%s" is still at version %s, so upgrade %s did not change it; a rollback would '
                    'only discard the writes made since its restore point %s.',
                    v_row.extname, coalesce(v_version, '(not installed)'), v_row.id, v_rp.name);
  END IF;
  -- A point-in-time recovery rewinds the whole cluster: going back past a later upgrade's restore
  -- point would silently undo that upgrade as well.
  SELECT rp.upgrade_id, rp.name INTO v_later FROM @extschema@.restore_points rp
   WHERE rp.upgrade_id <> v_row.id AND rp.created_at > v_rp.created_at ORDER BY rp.created_at DESC LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('cannot roll back upgrade %s: upgrade %s created a later restore point (%s)',
                       v_row.id, v_later.upgrade_id, v_later.name),
      HINT = format('Rolling back to %s would also undo upgrade %s; roll back upgrade %s first.',
                    v_rp.name, v_later.upgrade_id, v_later.upgrade_id);
  END IF;

  BEGIN
    UPDATE @extschema@.upgrades u
       SET state = 'rolling_back', rollback_requested_at = now(), agent_job = NULL, agent_job_cursor = 0,
           progress = NULL, updated_at = now(), phase_started_at = now(),
           report = u.report || jsonb_build_object('state_before_rollback', v_row.state)
     WHERE u.id = v_row.id;
  EXCEPTION WHEN unique_violation THEN
    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
    IF v_constraint IS DISTINCT FROM 'upgrades_one_in_flight' THEN
      RAISE;
    END IF;
    SELECT u.id, u.state INTO v_other FROM @extschema@.upgrades u
     WHERE u.extname = v_row.extname AND u.state = ANY (@extschema@._in_flight_states()) ORDER BY u.id LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = '55006',
      MESSAGE = format('cannot roll back upgrade %s: upgrade %s of extension "%s" is in flight',
                       v_row.id, coalesce(v_other.id::text, 'another'), v_row.extname),
      HINT = 'Wait for the other upgrade to finish (safe_upgrade.wait()) or cancel it, then roll back.';
  END;
  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail)
  VALUES (v_row.id, 'rolling_back', 'warning',
          format('rollback to restore point %s requested by %s; every write committed after it will be lost',
                 v_rp.name, session_user),
          jsonb_build_object('requested_by', session_user, 'from', v_row.state, 'to', 'rolling_back',
                             'restore_point', v_rp.name, 'lsn', v_rp.lsn::text));
  PERFORM @extschema@._wake_worker_at_commit();
  RETURN 'rolling_back';
END
$fn$;

-- Registers a health check: a query that must return true after an upgrade (on the dry-run clone
-- and on production). extname NULL means every upgrade.
CREATE FUNCTION @extschema@.add_health_check(name text, check_sql text, extname name DEFAULT NULL,
                                             timeout interval DEFAULT '30 seconds', database name DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_name text := $1;
  v_sql text := $2;
  v_ext name := $3;
  v_timeout interval := $4;
  v_database name := $5;
  v_id bigint;
BEGIN
  PERFORM @extschema@._require_operator('add a health check');
  IF v_name IS NULL OR btrim(v_name) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check name must not be empty',
      HINT = 'Give the check a short descriptive name, for example ''orders_view_answers''.';
  END IF;
  IF length(v_name) > 200 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check name is too long (over 200 characters)',
      HINT = 'Give the check a short descriptive name.';
  END IF;
  IF v_sql IS NULL OR btrim(v_sql) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check SQL must not be empty',
      HINT = 'Pass a query that returns true when the database is healthy, '
             'for example ''SELECT count(*) > 0 FROM orders_view''.';
  END IF;
  IF v_timeout IS NULL OR v_timeout <= interval '0' OR v_timeout > interval '1 hour' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check timeout must be more than 0 and at most 1 hour',
      HINT = 'Pass an interval such as ''30 seconds''.';
  END IF;
  IF v_ext IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = v_ext)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = v_ext) THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('extension "%s" does not exist', @extschema@._for_message(v_ext)),
      HINT = 'Check the name against SELECT name FROM pg_available_extensions, '
             'or pass NULL to run the check for every upgrade.';
  END IF;
  IF v_database IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = v_database) THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('database "%s" does not exist', @extschema@._for_message(v_database)),
      HINT = 'Name a database listed by SELECT datname FROM pg_database, '
             'or pass NULL to run the check in every database of the upgrade.';
  END IF;
  BEGIN
    INSERT INTO @extschema@.health_checks (name, check_sql, extname, timeout, datname)
    VALUES (v_name, v_sql, v_ext, v_timeout, v_database)
    RETURNING id INTO v_id;
  EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING ERRCODE = '42710',
      MESSAGE = format('health check "%s" already exists', @extschema@._for_message(v_name)),
      HINT = format('Choose another name, or have a superuser remove the old check with '
                    'DELETE FROM safe_upgrade.health_checks WHERE name = %L.',
                    @extschema@._for_message(v_name));
  END;
  RETURN v_id;
END
$fn$;

-- Privileges. Reading is public (the catalog tables, plan, status, wait, agent_status); changing
-- is for superusers and safe_upgrade_operator, and only through these functions, which enforce
-- the state rules. Nobody but superusers can write the tables directly.
REVOKE ALL ON FUNCTION @extschema@.begin(name, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.approve(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rollback(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_health_check(text, text, name, interval, name) FROM PUBLIC;
-- Read other databases as the bootstrap superuser: only plan() and begin() may, and plan() hides
-- what its caller could not see itself.
REVOKE ALL ON FUNCTION @extschema@._database_inventory(name, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._select_databases(name, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.begin(name, text, jsonb) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.approve(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.cancel(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.rollback(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.add_health_check(text, text, name, interval, name) TO safe_upgrade_operator;
-- Only the SECURITY DEFINER functions above need it.
REVOKE ALL ON FUNCTION @extschema@._require_operator(text) FROM PUBLIC;
