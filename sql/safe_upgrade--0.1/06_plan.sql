-- safe_upgrade--0.1.sql, part 06: plan().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- What plan() warns about the standbys of _standbys() (none of it blocks: the agent refuses an
-- upgrade that a standby could not follow before it is applied): each warning with its hint, for
-- the standbys that would not follow the primary after a rollback, or only slowly.
CREATE FUNCTION @extschema@._standby_warnings(standbys jsonb)
RETURNS TABLE (warning text, hint text) LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s jsonb;
  v_name text;
  v_agent jsonb;
  v_shared record;
  v_seen text[] := '{}';
BEGIN
  FOR v_shared IN
    SELECT x ->> 'name' AS name, count(*) AS n FROM jsonb_array_elements($1) x
     WHERE x ->> 'state' IS DISTINCT FROM 'not_streaming' GROUP BY 1 HAVING count(*) > 1 ORDER BY 1
  LOOP
    warning := format('%s standbys stream under the name "%s", so their agents cannot tell them apart',
                      v_shared.n, v_shared.name);
    hint := 'Give each standby its own application_name in primary_conninfo (or its own cluster_name).';
    RETURN NEXT;
  END LOOP;
  FOR s IN SELECT x FROM jsonb_array_elements($1) x LOOP
    v_name := s ->> 'name';
    v_agent := s -> 'agent';
    -- Standbys of one name share one agent entry, and so its warnings (counted above).
    CONTINUE WHEN v_name = ANY (v_seen);
    v_seen := v_seen || v_name;
    IF s -> 'has_agent' = 'null'::jsonb THEN
      warning := format('whether standby "%s" has an agent is unknown: the agent did not report its standby agents',
                        v_name);
      hint := 'Check that the agent is reachable and up to date (SELECT * FROM safe_upgrade.agent_status()).';
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF NOT (s ->> 'has_agent')::boolean THEN
      warning := format('standby "%s" has no agent: after a rollback it will not follow the primary and must be '
                        're-cloned by hand', v_name);
      hint := format('Run safe-upgrade-agent next to standby "%s" (role "standby") and add it to this server''s '
                     'agent configuration as a [[standby]] named "%s".', v_name, v_name);
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF s ->> 'state' = 'not_streaming' THEN
      warning := format('standby "%s" has an agent (%s) but does not stream from this server', v_name,
                        coalesce(v_agent ->> 'agent', '?'));
      hint := format('Check primary_conninfo and the server log of standby "%s", or remove its [[standby]] entry '
                     'from the agent''s configuration.', v_name);
      RETURN NEXT;
    END IF;
    IF NOT coalesce((v_agent ->> 'reachable')::boolean, false) THEN
      warning := format('the agent of standby "%s" (%s) is unreachable: %s', v_name,
                        coalesce(v_agent ->> 'agent', '?'), coalesce(nullif(v_agent ->> 'error', ''), 'no answer'));
      hint := format('Start the safe-upgrade-agent of standby "%s", or correct its address in the agent''s '
                     '[[standby]] entry.', v_name);
      RETURN NEXT;
      CONTINUE;  -- what it would say about its node is unknown
    END IF;
    IF NOT coalesce((v_agent ->> 'system_identifier_matches')::boolean, true) THEN
      warning := format('the agent of standby "%s" (%s) serves another cluster (its system identifier is not '
                        'this cluster''s)', v_name, coalesce(v_agent ->> 'agent', '?'));
      hint := format('Point the [[standby]] entry "%s" at the agent that runs beside that standby.', v_name);
      RETURN NEXT;
      CONTINUE;
    END IF;
    IF NOT coalesce((s ->> 'rewindable')::boolean, false) THEN
      warning := format('standby "%s" cannot be rewound (wal_log_hints and data_checksums are off): after a '
                        'rollback it is re-cloned with pg_basebackup, which takes longer', v_name);
      hint := 'Set wal_log_hints = on and restart the primary, so that pg_rewind can rewind its standbys.';
      RETURN NEXT;
    END IF;
    IF NOT coalesce((v_agent ->> 'pg_rewind')::boolean, true) THEN
      warning := format('pg_rewind is missing on the node of standby "%s": after a rollback it is re-cloned with '
                        'pg_basebackup, which takes longer', v_name);
      hint := format('Install pg_rewind (it comes with the PostgreSQL server package) in the bin_dir of the agent '
                     'of standby "%s".', v_name);
      RETURN NEXT;
    END IF;
  END LOOP;
END
$fn$;

-- Read-only preflight report: what begin() would do, what it needs, and what a rollback costs.
CREATE FUNCTION @extschema@.plan(extname name, target_version text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_selection jsonb := @extschema@._select_databases($1, $2, NULL);
  v_ext name := $1;
  v_target text := $2;
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
  v_standbys jsonb := @extschema@._standbys();
  v_warnings text[];
  v_warning_hints text[];
  v_breakage jsonb;
  v_stale jsonb;
BEGIN
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
  SELECT f.id, f.state INTO v_in_flight FROM @extschema@._in_flight_upgrade(v_ext) f;
  IF FOUND THEN
    v_reasons := v_reasons || format('upgrade %s of %s is already in flight (%s)',
                                     v_in_flight.id, v_ext, v_in_flight.state);
    v_hints := v_hints || format('Wait for upgrade %s with safe_upgrade.wait(%s), '
                                 'or cancel it with safe_upgrade.cancel(%s).',
                                 v_in_flight.id, v_in_flight.id, v_in_flight.id);
  END IF;

  -- Standbys only warn (see _standby_warnings).
  SELECT coalesce(array_agg(w.warning ORDER BY w.n), '{}'), coalesce(array_agg(w.hint ORDER BY w.n), '{}')
    INTO v_warnings, v_warning_hints
    FROM @extschema@._standby_warnings(v_standbys) WITH ORDINALITY AS w (warning, hint, n);
  -- So do the objects the scripts on the path drop that your objects use: the dry run decides.
  v_breakage := @extschema@._predicted_breakage(v_ext, v_databases, v_dependents);
  SELECT v_warnings || coalesce(array_agg(format('database %s: %s', b ->> 'datname', b ->> 'message')), '{}'),
         v_warning_hints || coalesce(array_agg(format('the dry run will tell whether this breaks (%s); change or '
                                                      'drop %s first if it does', b ->> 'statement',
                                                      b ->> 'object_identity')), '{}')
    INTO v_warnings, v_warning_hints
    FROM jsonb_array_elements(v_breakage) b;
  -- Extensions that require this one but are not upgraded with it (its family stays split).
  SELECT v_warnings || coalesce(array_agg(format('database %s: %s requires %s but is not upgraded with it: %s',
                                                 d ->> 'datname', f ->> 'extname', v_ext, f ->> 'reason')
                                          ORDER BY d ->> 'datname', f ->> 'extname'), '{}'),
         v_warning_hints || coalesce(array_agg(format('bring %s to version %s first so that it is upgraded with %s, '
                                                      'or upgrade it by hand in database %s afterwards (ALTER '
                                                      'EXTENSION %s UPDATE)', f ->> 'extname',
                                                      d ->> 'installed_version', v_ext, d ->> 'datname',
                                                      f ->> 'extname')
                                               ORDER BY d ->> 'datname', f ->> 'extname'), '{}')
    INTO v_warnings, v_warning_hints
    FROM jsonb_array_elements(v_databases) d, jsonb_array_elements(coalesce(d -> 'family_left_behind', '[]')) f;

  -- Sessions on an old copy of the libraries (of the extension and the family that moves with it).
  v_stale := @extschema@._stale_sessions(ARRAY[v_ext::text] || ARRAY(
    SELECT DISTINCT f ->> 'extname' FROM jsonb_array_elements(v_databases) d,
                                         jsonb_array_elements(coalesce(d -> 'family', '[]')) f));
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_stale) s WHERE s ? 'pid') THEN
    v_warnings := v_warnings || (SELECT format('%s process(es) run an old copy of %s that a package upgrade replaced '
                                               'on disk (pid %s); they keep the old code after the upgrade',
                                               count(DISTINCT s ->> 'pid'), string_agg(DISTINCT s ->> 'library', ', '),
                                               string_agg(DISTINCT s ->> 'pid', ', '))
                                   FROM jsonb_array_elements(v_stale) s WHERE s ? 'pid');
    v_warning_hints := v_warning_hints || (
      'begin with {"recycle_sessions": "idle"} (or "all") to end those client backends after the apply, or '
      'reconnect them yourself' || CASE WHEN v_stale @> '[{"backend_type": "postmaster"}]'
                                         THEN '; the postmaster preloaded it, so only a server restart loads the new one'
                                         ELSE '' END);
  END IF;
  IF v_stale @> '[{"truncated": true}]' THEN
    v_warnings := v_warnings || 'the agent''s list of replaced libraries was cut short to fit, so stale_sessions may '
                                'miss some sessions'::text;
    v_warning_hints := v_warning_hints || 'the apply looks again itself and names every one in its events; '
                                          'restart the sessions of the libraries a system update replaced'::text;
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
                    'family', coalesce(d -> 'family', '[]'),
                    'dependents', jsonb_array_length(d -> 'dependents') + coalesce((d ->> 'dependents_hidden')::int, 0))
                    ORDER BY d ->> 'datname')
                  FROM jsonb_array_elements(v_databases) d),
    'skipped_databases', v_selection -> 'skipped',
    'requires', v_requires,
    'required_by', v_required_by,
    'dependents', v_dependents,
    -- What the scripts on the path drop or replace that those dependents use: advice, before any
    -- snapshot; the dry run stays the judge.
    'predicted_breakage', v_breakage,
    'pitr', v_pitr - 'reasons' - 'hints',
    -- Documented steps for this extension (_extension_notes): handled says what the apply does
    -- about it; null: it is up to you.
    'notes', @extschema@._extension_notes(v_ext),
    -- The server's processes on an old copy of the extension's libraries (_stale_sessions).
    'stale_sessions', v_stale,
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
      'databases_rewound_but_not_upgraded', v_untouched,
      'standbys', CASE WHEN jsonb_array_length(v_standbys) = 0 THEN 'none: no standby streams from this server'
                       ELSE 'after a rollback the agent rewinds each standby that has an agent (pg_rewind, else '
                            'a new clone with pg_basebackup) so that it follows the primary on its new timeline; '
                            'a standby without an agent must be re-cloned by hand' END),
    'standbys', v_standbys,
    'in_flight_upgrade', CASE WHEN v_in_flight.id IS NULL THEN NULL
                              ELSE jsonb_build_object('id', v_in_flight.id, 'state', v_in_flight.state) END,
    'verdict', CASE WHEN cardinality(v_reasons) = 0 THEN 'ok' ELSE 'blocked' END,
    'reasons', to_jsonb(v_reasons),
    'hints', to_jsonb(v_hints),
    'warnings', to_jsonb(v_warnings),
    'warning_hints', to_jsonb(v_warning_hints));
END
$fn$;
