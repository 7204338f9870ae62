-- safe_upgrade--0.1.sql, part 06: the sessions that run an old copy of an extension's library.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- The shared libraries of extensions $1 as PostgreSQL names them ('$libdir/postgis-3'): the probin
-- of their C functions in this database and the module_pathname of their control files (which
-- covers databases that do not have them). SECURITY DEFINER: control files are read from SHAREDIR.
CREATE FUNCTION @extschema@._extension_libraries(p_extnames text[])
RETURNS text[] LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_dir text := (SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR') || '/extension/';
  v_libraries text[];
  v_ext text;
  v_control text;
BEGIN
  SELECT coalesce(array_agg(DISTINCT p.probin), '{}') INTO v_libraries
    FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = e.oid
                               AND d.deptype = 'e' AND d.classid = 'pg_catalog.pg_proc'::regclass
    JOIN pg_catalog.pg_proc p ON p.oid = d.objid
    JOIN pg_catalog.pg_language l ON l.oid = p.prolang AND l.lanname = 'c'
   WHERE e.extname::text = ANY (p_extnames) AND p.probin IS NOT NULL;
  FOREACH v_ext IN ARRAY p_extnames LOOP
    -- Only names of available extensions reach the file name.
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = v_ext);
    BEGIN
      v_control := pg_catalog.pg_read_file(v_dir || v_ext || '.control');
    EXCEPTION WHEN OTHERS THEN
      CONTINUE;
    END;
    v_libraries := v_libraries || ARRAY(
      SELECT m[1] FROM regexp_matches(v_control, '^\s*module_pathname\s*=\s*''([^'']*)''', 'gn') AS m);
  END LOOP;
  RETURN ARRAY(SELECT DISTINCT x FROM unnest(v_libraries) x WHERE x <> '' ORDER BY x);
END
$fn$;

-- The server's processes that map an old copy of a library of extensions $1 (a file a package
-- upgrade replaced since they loaded it), as the agent last saw them (agent_status().stale_libraries)
-- and pg_stat_activity shows them: [{pid, library, reason, backend_type, datname, usename,
-- application_name, state}] in pid order. The postmaster shows as backend_type 'postmaster' (a
-- library it preloaded stays old in every new backend until a restart). Empty when the agent
-- reported nothing (or an older agent reports no libraries). When the agent's list was cut short
-- to fit, a last element {"truncated": true} says that sessions may be missing.
CREATE FUNCTION @extschema@._stale_sessions(p_extnames text[])
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_files text[];
  v_stale jsonb;
  v_postmaster int;
  v_may_see boolean := pg_catalog.pg_has_role(session_user, 'pg_read_all_stats', 'USAGE');
BEGIN
  SELECT a.stale_libraries INTO v_stale FROM @extschema@.agent_status() a WHERE a.reachable;
  IF v_stale IS NULL OR jsonb_typeof(v_stale) <> 'array' OR jsonb_array_length(v_stale) = 0 THEN
    RETURN '[]'::jsonb;
  END IF;
  -- '$libdir/postgis-3' is the file postgis-3 or postgis-3.so wherever it lives (PostgreSQL tries
  -- both, so 'timescaledb-2.11.1' is timescaledb-2.11.1.so).
  SELECT coalesce(array_agg(f) || array_agg(f || '.so'), '{}') INTO v_files
    FROM (SELECT regexp_replace(x, '^.*/', '') AS f FROM unnest(@extschema@._extension_libraries(p_extnames)) x) l;
  BEGIN
    v_postmaster := split_part(pg_catalog.pg_read_file('postmaster.pid'), E'\n', 1)::int;
  EXCEPTION WHEN OTHERS THEN
    v_postmaster := NULL;
  END;
  RETURN (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
             'pid', p.pid, 'library', l ->> 'library', 'reason', l ->> 'reason',
             'backend_type', coalesce(a.backend_type, CASE WHEN p.pid = v_postmaster THEN 'postmaster'
                                                           ELSE 'server process' END),
             'datname', a.datname, 'usename', a.usename,
             -- What a session does is shown, as pg_stat_activity shows it, to its own role and to
             -- pg_read_all_stats.
             'application_name', CASE WHEN v_may_see OR a.usename = session_user THEN a.application_name END,
             'state', CASE WHEN v_may_see OR a.usename = session_user THEN a.state END)
             ORDER BY p.pid, l ->> 'library'), '[]'::jsonb)
      FROM jsonb_array_elements(v_stale) l
      CROSS JOIN LATERAL (SELECT x::int AS pid FROM jsonb_array_elements_text(l -> 'pids') x) p
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = p.pid
     WHERE l ->> 'library' = ANY (v_files))
    || CASE WHEN v_stale @> '[{"truncated": true}]' THEN '[{"truncated": true}]'::jsonb ELSE '[]'::jsonb END;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@._extension_libraries(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._stale_sessions(text[]) FROM PUBLIC;
