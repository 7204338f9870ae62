-- safe_upgrade--0.1.sql, part 02: the state lists and the small internal helpers the SQL surface shares.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

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

-- The upgrade of extension $1 that is in flight, if any (upgrades_one_in_flight allows one).
CREATE FUNCTION @extschema@._in_flight_upgrade(extname name)
RETURNS TABLE (id bigint, state text) LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT u.id, u.state FROM @extschema@.upgrades u
   WHERE u.extname = $1 AND u.state = ANY (@extschema@._in_flight_states()) ORDER BY u.id LIMIT 1
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

-- Raises 42501 unless the session user may change upgrades. EXECUTE on the mutating functions is
-- already limited to safe_upgrade_operator; this also covers a grant made by mistake to someone else.
CREATE FUNCTION @extschema@._require_operator(action text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
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

-- _require_operator($2), then the row of upgrade $1 locked FOR UPDATE (_upgrade_or_error).
CREATE FUNCTION @extschema@._upgrade_to_change(upgrade_id bigint, action text)
RETURNS @extschema@.upgrades LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT @extschema@._require_operator($2); SELECT @extschema@._upgrade_or_error($1, true) $fn$;

-- Records what an operator asked of an upgrade (an event) and wakes the worker at commit.
CREATE FUNCTION @extschema@._record_request(upgrade_id bigint, phase text, level text, message text, detail jsonb)
RETURNS void LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail) VALUES ($1, $2, $3, $4, $5);
  SELECT @extschema@._wake_worker_at_commit();
$fn$;

-- The commands an archive_command chains with && (a site's own tool, then the agent's wal-push:
-- both must succeed for PostgreSQL to count a segment archived), each with what it is: the
-- agent's "wal-push", pgBackRest's "archive-push", or "other". plan() reports it as
-- pitr.archive_chain; an empty array when archiving runs no command.
CREATE FUNCTION @extschema@._archive_chain(archive_command text)
RETURNS jsonb LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'command', part,
           'kind', CASE WHEN part ~ '(^|/|'')safe-upgrade-agent''?\s+wal-push(\s|$)' THEN 'agent wal-push'
                        WHEN part ~ '(^|/|'')pgbackrest''?\s.*archive-push(\s|$)' THEN 'pgbackrest archive-push'
                        ELSE 'other' END) ORDER BY n), '[]'::jsonb)
  FROM (SELECT btrim(p) AS part, n
          FROM unnest(string_to_array(coalesce($1, ''), '&&')) WITH ORDINALITY AS t(p, n)) parts
  WHERE part <> '' AND part <> '(disabled)'
$fn$;

-- The streaming standbys of this server, a jsonb array of objects {name, client_addr, state,
-- sync_state, write_lag_seconds, flush_lag_seconds, replay_lag_seconds, replay_lsn, slot_name,
-- rewindable, has_agent, agent}: pg_stat_replication's physical walsenders (a logical one is
-- connected to a database; pg_basebackup's are backups, not standbys), the physical slot each one
-- holds, whether a rollback could rewind it (pg_rewind needs wal_log_hints or data checksums,
-- which standbys share with their primary), and the standby agent of that name that the primary's
-- agent is configured with (agent_status().standby_agents; agent is NULL without one). A standby
-- agent whose standby does not stream from here is listed after them with state 'not_streaming'.
-- has_agent is NULL when that is unknown: the agent is unreachable or did not report its standby
-- agents, or its list was cut short. SECURITY DEFINER like _prerequisites(): it takes no
-- arguments and returns facts, but client_addr only to roles that pg_stat_replication shows it to
-- (pg_read_all_stats) and the agents' data_directory only to those that may read data_directory.
CREATE FUNCTION @extschema@._standbys()
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_agents jsonb;
  v_agents_cut boolean;
  v_rewindable boolean := current_setting('wal_log_hints') = 'on' OR current_setting('data_checksums') = 'on';
  v_see_addr boolean := pg_catalog.pg_has_role(session_user, 'pg_read_all_stats', 'USAGE');
  v_see_dirs boolean := pg_catalog.pg_has_role(session_user, 'pg_read_all_settings', 'USAGE');
  v_result jsonb;
BEGIN
  SELECT a.standby_agents INTO v_agents FROM @extschema@.agent_status() a WHERE a.reachable;
  IF jsonb_typeof(v_agents) IS DISTINCT FROM 'array' THEN
    v_agents := NULL;
  END IF;
  v_agents_cut := EXISTS (SELECT 1 FROM jsonb_array_elements(v_agents) x
                           WHERE x ? 'truncated' OR x ? 'invalid');
  WITH agents AS (
    SELECT x ->> 'name' AS name,
           CASE WHEN v_see_dirs THEN x ELSE x - 'data_directory' END AS agent
      FROM jsonb_array_elements(coalesce(v_agents, '[]'::jsonb)) x
     WHERE jsonb_typeof(x) = 'object' AND x ? 'name'),
  senders AS (
    SELECT r.pid, r.application_name AS name, r.client_addr, r.state, r.sync_state,
           r.write_lag, r.flush_lag, r.replay_lag, r.replay_lsn,
           (SELECT sl.slot_name FROM pg_catalog.pg_replication_slots sl
             WHERE sl.active_pid = r.pid AND sl.slot_type = 'physical' LIMIT 1) AS slot_name
      FROM pg_catalog.pg_stat_replication r
      JOIN pg_catalog.pg_stat_activity act ON act.pid = r.pid
     WHERE coalesce(act.datid, 0) = 0
       AND r.application_name IS DISTINCT FROM 'pg_basebackup' AND r.state IS DISTINCT FROM 'backup'),
  listed AS (
    SELECT 0 AS streams, s.name, s.pid, jsonb_build_object(
             'name', s.name,
             'client_addr', CASE WHEN v_see_addr THEN pg_catalog.host(s.client_addr) END,
             'state', s.state,
             'sync_state', s.sync_state,
             'write_lag_seconds', extract(epoch FROM s.write_lag),
             'flush_lag_seconds', extract(epoch FROM s.flush_lag),
             'replay_lag_seconds', extract(epoch FROM s.replay_lag),
             'replay_lsn', s.replay_lsn,
             'slot_name', s.slot_name,
             'rewindable', v_rewindable,
             'has_agent', CASE WHEN a.agent IS NOT NULL THEN true
                               WHEN v_agents IS NULL OR v_agents_cut THEN NULL ELSE false END,
             'agent', a.agent) AS standby
      FROM senders s LEFT JOIN agents a ON a.name = s.name
    UNION ALL
    SELECT 1, a.name, NULL, jsonb_build_object(
             'name', a.name, 'client_addr', NULL, 'state', 'not_streaming', 'sync_state', NULL,
             'write_lag_seconds', NULL, 'flush_lag_seconds', NULL, 'replay_lag_seconds', NULL,
             'replay_lsn', NULL, 'slot_name', NULL, 'rewindable', v_rewindable, 'has_agent', true,
             'agent', a.agent)
      FROM agents a WHERE NOT EXISTS (SELECT 1 FROM senders s WHERE s.name = a.name))
  SELECT coalesce(jsonb_agg(l.standby ORDER BY l.streams, l.name, l.pid), '[]'::jsonb) INTO v_result FROM listed l;
  RETURN v_result;
END
$fn$;

-- Steps the community documents for upgrading particular extensions, as plan() shows them: one row
-- per note, each with its source, and whether the agent's apply already does what it asks. Adding
-- a note is adding a row.
CREATE FUNCTION @extschema@._extension_notes(p_extname name)
RETURNS jsonb LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT coalesce(jsonb_agg(jsonb_build_object('extension', n.extname, 'note', n.note, 'source', n.source,
                                               'handled', n.handled) ORDER BY n.ord), '[]'::jsonb)
    FROM (VALUES
      (1, 'timescaledb', 'ALTER EXTENSION timescaledb UPDATE must be the first command of a fresh session, '
          'before anything loads the old version''s library', 'https://docs.timescale.com/self-hosted/latest/upgrades/minor-upgrade/',
          'the apply runs it on a connection of its own, after nothing but SET LOCAL and a read of pg_extension'),
      (2, 'postgis', 'the PostGIS extensions of a database (postgis_raster, postgis_topology, postgis_sfcgal, '
          'postgis_tiger_geocoder) are upgraded together, with postgis_extensions_upgrade(); '
          'postgis_full_version() says "need upgrade" while one lags', 'https://postgis.net/docs/postgis_extensions_upgrade.html',
          NULL),
      (3, 'pg_partman', 'version 5 changes part_config and drops trigger-based partitioning; 4.x users follow the '
          'migration guide before ALTER EXTENSION', 'https://github.com/pgpartman/pg_partman/blob/master/doc/migrate_to_partman_5.md',
          NULL),
      (4, 'citus', 'ALTER EXTENSION citus UPDATE runs on the coordinator and on every worker node, each a cluster '
          'of its own', 'https://docs.citusdata.com/en/stable/admin_guide/upgrading_citus.html', NULL)
    ) AS n(ord, extname, note, source, handled)
   WHERE n.extname = p_extname
$fn$;
