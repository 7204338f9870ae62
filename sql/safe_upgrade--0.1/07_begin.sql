-- safe_upgrade--0.1.sql, part 07: begin().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Queues an upgrade for the background worker and returns its id.
CREATE FUNCTION @extschema@.begin(extname name, target_version text, options jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_id bigint;
  v_ext name := $1;
  v_target text := $2;
  v_selection jsonb;
  v_from text;
  v_path text[];
  v_databases text;
  v_family text;
  v_options jsonb;
  v_other record;
  v_pitr jsonb;
  v_reasons text;
  v_hints text;
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
  -- The extensions upgraded with it (in any database), for the event.
  SELECT string_agg(DISTINCT f ->> 'extname', ', ') INTO v_family
    FROM jsonb_array_elements(v_selection -> 'databases') d, jsonb_array_elements(coalesce(d -> 'family', '[]')) f;

  SELECT f.id, f.state INTO v_other FROM @extschema@._in_flight_upgrade(v_ext) f;
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
    IF v_constraint IS DISTINCT FROM 'upgrades_one_in_flight' THEN RAISE; END IF;
    -- Another session's begin() committed first; this statement's snapshot shows its row.
    SELECT f.id, f.state INTO v_other FROM @extschema@._in_flight_upgrade(v_ext) f;
    RAISE EXCEPTION USING ERRCODE = '55006',
      MESSAGE = format('upgrade %s of extension "%s" is already in flight (%s)',
                       coalesce(v_other.id::text, 'another'), v_ext, coalesce(v_other.state, 'queued')),
      HINT = 'Another session began an upgrade of this extension at the same moment; '
             'wait for it with safe_upgrade.wait() or cancel it, then begin again.';
  END;

  INSERT INTO @extschema@.events (upgrade_id, phase, level, message, detail)
  VALUES (v_id, 'queued', 'info',
          format('upgrade of %s from %s to %s in database %s%s queued by %s',
                 v_ext, v_from, v_target, v_databases, coalesce(' with ' || v_family, ''), session_user),
          jsonb_build_object('databases', (SELECT jsonb_agg(jsonb_build_object(
                                              'datname', d -> 'datname', 'from_version', d -> 'installed_version',
                                              'update_path', d -> 'update_path', 'family', d -> 'family'))
                                             FROM jsonb_array_elements(v_selection -> 'databases') d),
                             'skipped_databases', v_selection -> 'skipped', 'options', v_options,
                             'requested_by', session_user));
  INSERT INTO @extschema@.upgrade_databases (upgrade_id, datname, from_version, update_path, family)
  SELECT v_id, d ->> 'datname', d ->> 'installed_version',
         ARRAY(SELECT jsonb_array_elements_text(d -> 'update_path')), coalesce(d -> 'family', '[]')
    FROM jsonb_array_elements(v_selection -> 'databases') d;
  -- The standbys streaming from production (one row per name; plan() warns when names repeat): the
  -- agent rewinds them after a rollback and records how each one fared here.
  INSERT INTO @extschema@.upgrade_standbys (upgrade_id, name, client_addr, sync_state, slot_name, rewindable,
                                           has_agent)
  SELECT DISTINCT ON (x ->> 'name') v_id, x ->> 'name', x ->> 'client_addr', x ->> 'sync_state', x ->> 'slot_name',
         (x ->> 'rewindable')::boolean, (x ->> 'has_agent')::boolean
    FROM jsonb_array_elements(@extschema@._standbys()) x
   WHERE x ->> 'state' IS DISTINCT FROM 'not_streaming'
   ORDER BY x ->> 'name';
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
