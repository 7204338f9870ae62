-- safe_upgrade--0.1.sql, part 03: which databases an upgrade covers, and the errors plan() and begin() share.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- The databases an upgrade of extension $1 to version $2 covers: those named in $3, or (NULL)
-- every database of the cluster that has the extension. Returns {databases: [one inventory per
-- database to upgrade, with its family: [{extname, from_version, update_path}], the extensions
-- that require it and are upgraded with it, and family_left_behind: [{extname,
-- installed_version, reason}]], skipped: [{datname, reason, installed_version}]}, or raises the error
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
  v_family jsonb;
  v_left_behind jsonb;
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
      -- Its family: the extensions that require it, at its version and with a path to the same
      -- target, are upgraded with it in one transaction (PostGIS's raster, topology, ...); the
      -- others stay behind, and plan() warns about them.
      SELECT coalesce(jsonb_agg(jsonb_build_object('extname', r ->> 'extname', 'from_version',
                                                   r ->> 'installed_version', 'update_path', r -> 'update_path')
                                ORDER BY r ->> 'extname')
                        FILTER (WHERE r ->> 'installed_version' = v_info ->> 'installed_version'
                                  AND jsonb_typeof(r -> 'update_path') = 'array'), '[]'),
             coalesce(jsonb_agg(jsonb_build_object('extname', r ->> 'extname', 'installed_version',
                                                   r ->> 'installed_version', 'reason',
                                  CASE WHEN r ->> 'installed_version' IS DISTINCT FROM v_info ->> 'installed_version'
                                       THEN format('it is at version %s, not %s like %s', r ->> 'installed_version',
                                                   v_info ->> 'installed_version', v_ext)
                                       ELSE format('it has no update path from version %s to %s',
                                                   r ->> 'installed_version', v_target) END)
                                ORDER BY r ->> 'extname')
                        FILTER (WHERE r ->> 'installed_version' IS DISTINCT FROM v_info ->> 'installed_version'
                                   OR jsonb_typeof(r -> 'update_path') IS DISTINCT FROM 'array'), '[]')
        INTO v_family, v_left_behind
        FROM jsonb_array_elements(coalesce(v_info -> 'requiring_extensions', '[]')) r;
      v_selected := v_selected || jsonb_build_array(v_info - 'missing_requires' - 'requiring_extensions'
                                                    || jsonb_build_object('family', v_family,
                                                                          'family_left_behind', v_left_behind));
    END IF;
  END LOOP;
  RETURN jsonb_build_object(
    'databases', v_selected,
    'skipped', (SELECT coalesce(jsonb_agg(x ORDER BY x ->> 'datname'), '[]') FROM jsonb_array_elements(v_skipped) x));
END
$fn$;
