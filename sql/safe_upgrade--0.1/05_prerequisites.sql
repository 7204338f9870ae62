-- safe_upgrade--0.1.sql, part 05: the prerequisites of a recoverable upgrade.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

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
  -- The agent's backend: NULL while the agent is unreachable (then the local backend's checks and
  -- hints apply, as they did before backends existed).
  v_pgbackrest boolean;
  v_summary jsonb;
  v_backend jsonb;
  v_stanza_hint text;
  v_reasons text[] := '{}';
  v_hints text[] := '{}';
BEGIN
  SELECT sum(pg_catalog.pg_database_size(d.oid))::bigint INTO v_cluster_size FROM pg_catalog.pg_database d;
  SELECT s.system_identifier INTO v_system_id FROM pg_catalog.pg_control_system() s;
  SELECT * INTO a FROM @extschema@.agent_status();
  SELECT coalesce(s.last_failed_time > coalesce(s.last_archived_time, '-infinity'), false) INTO v_failing
    FROM pg_catalog.pg_stat_archiver s;
  SELECT s.last_archived_wal, s.last_archived_time INTO v_archiver FROM pg_catalog.pg_stat_archiver s;
  v_pgbackrest := coalesce(a.reachable AND a.backend_kind = 'pgbackrest', false);
  v_summary := CASE WHEN v_pgbackrest THEN a.backend_summary::jsonb END;
  v_stanza_hint := format('pgbackrest --stanza=%s archive-push %%p', coalesce(a.backend_stanza, '<stanza>'));

  -- The extra disk a snapshot takes in snapshot_dir, by method (the agent's SnapshotExtraBytes):
  -- basebackup copies the cluster; reflink shares its extents and adds the WAL copied from the
  -- archive (four segments) and the filesystem's metadata (1/200 of the cluster at most). With the
  -- pgbackrest backend the snapshot is a backup in the stanza's repositories: snapshot_dir only
  -- gets its snapshot.json.
  v_method := CASE WHEN v_pgbackrest THEN 'pgbackrest' ELSE coalesce(a.snapshot_method, 'basebackup') END;
  v_extra := jsonb_build_object(
    'basebackup_bytes', v_cluster_size,
    'reflink_bytes', 4 * (SELECT s.setting::bigint FROM pg_catalog.pg_settings s WHERE s.name = 'wal_segment_size')
               + v_cluster_size / 200);
  IF v_pgbackrest THEN
    v_extra := v_extra || jsonb_build_object('pgbackrest_bytes', 0);
  END IF;
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
    v_hints := v_hints || CASE WHEN v_pgbackrest
                               THEN format('Set archive_mode = on with archive_command = ''%s'' and restart the server.',
                                           v_stanza_hint)
                               ELSE 'Set archive_mode = on with an archive_command '
                                    '(the agent''s "safe-upgrade-agent wal-push") and restart the server.' END;
  ELSIF v_failing THEN
    -- Every command of a chain must succeed: one that fails keeps each segment out of every archive.
    v_reasons := v_reasons || format('the archiver is failing: its last attempt (WAL file %s, at %s) failed after '
                                     'its last success, so WAL does not reach the archive a rollback reads',
                                     (SELECT s.last_failed_wal FROM pg_catalog.pg_stat_archiver s),
                                     (SELECT s.last_failed_time FROM pg_catalog.pg_stat_archiver s));
    v_hints := v_hints || 'Read the server log for archive_command''s error (each command of a chain joined '
                          'with && must succeed), fix it, and plan again once pg_stat_archiver shows a success.'::text;
  ELSIF coalesce(v_archive_command, '') IN ('', '(disabled)') AND coalesce(v_archive_library, '') = '' THEN
    v_reasons := v_reasons || 'archive_mode is on but neither archive_command nor archive_library is set'::text;
    v_hints := v_hints || CASE WHEN v_pgbackrest
                               THEN format('Set archive_command = ''%s'' (the agent''s backend is pgBackRest) '
                                           'and reload the configuration.', v_stanza_hint)
                               ELSE 'Set archive_command to the agent''s "safe-upgrade-agent wal-push --config <file> %p" '
                                    'and reload the configuration.' END;
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
    IF v_pgbackrest THEN
      -- The rollback replays WAL from the stanza's archive, which only `pgbackrest check` proves
      -- works (it switches WAL and waits for the segment in the repository); the agent runs it
      -- at start, then every minute and after each job.
      IF a.backend_check_ok IS NULL THEN
        v_reasons := v_reasons || format('pgbackrest check has not run yet for stanza "%s", so nothing proves that '
                                         'archive_command archives into the stanza a rollback reads',
                                         a.backend_stanza);
        v_hints := v_hints || 'The agent runs it within a minute of its start; plan again shortly, or see the '
                              'agent''s log if it does not finish.'::text;
      ELSIF NOT a.backend_check_ok THEN
        v_reasons := v_reasons || format('pgbackrest check failed for stanza "%s" (at %s): %s',
                                         a.backend_stanza, a.backend_checked_at,
                                         coalesce(a.backend_problem, 'no message'));
        v_hints := v_hints || format('Run "pgbackrest --stanza=%s check" as the OS user that runs the agent and fix '
                                     'what it reports (archive_command must be ''%s''); the agent checks again '
                                     'within a minute.', a.backend_stanza, v_stanza_hint);
      END IF;
      IF v_summary ? 'system_identifier' AND v_summary ->> 'system_identifier' <> v_system_id::text THEN
        v_reasons := v_reasons || format('pgBackRest stanza "%s" belongs to another cluster (system identifier %s; '
                                         'this cluster is %s)',
                                         a.backend_stanza, v_summary ->> 'system_identifier', v_system_id);
        v_hints := v_hints || 'Set the agent''s backend.stanza to the stanza of this cluster and restart it.'::text;
      END IF;
    END IF;
    IF NOT v_pgbackrest AND NOT coalesce(a.wal_archive_writable, false) THEN
      v_reasons := v_reasons || 'the agent cannot write to its WAL archive directory'::text;
      v_hints := v_hints || 'Make the agent''s wal_archive_dir writable by the OS user that runs the agent.'::text;
    END IF;
    -- A rollback replays WAL from the agent's archive. A file the server says it archived well
    -- before the agent last looked must be there; if it is not, archive_command archives somewhere
    -- else, or nowhere (''/bin/true''), and no rollback could work.
    IF NOT v_pgbackrest AND a.wal_archive_files IS NOT NULL AND v_archiver.last_archived_wal IS NOT NULL
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
    IF NOT v_pgbackrest AND NOT coalesce(a.snapshot_method_possible, true) THEN
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

  -- The backend: the backups a rollback could build on are the newest full one and those after it
  -- (the agent lists only those).
  v_backend := CASE WHEN v_pgbackrest THEN jsonb_build_object(
                 'kind', 'pgbackrest',
                 'stanza', a.backend_stanza,
                 'check_ok', a.backend_check_ok,
                 'checked_at', a.backend_checked_at,
                 'problem', a.backend_problem,
                 'status', v_summary -> 'status',
                 'info_error', v_summary -> 'info_error',
                 'repos', v_summary -> 'repos',
                 'backups', v_summary -> 'backups',
                 'backups_total', v_summary -> 'backups_total',
                 'backups_omitted', v_summary -> 'backups_omitted',
                 'archive_max', v_summary -> 'archive_max')
               ELSE jsonb_build_object('kind', CASE WHEN a.reachable THEN coalesce(a.backend_kind, 'local') END) END;

  RETURN jsonb_build_object(
    'wal_level', v_wal_level,
    'archive_mode', v_archive_mode,
    'archive_command', v_archive_command,
    'archive_library', v_archive_library,
    'archive_chain', @extschema@._archive_chain(v_archive_command),
    'archiver_failing', v_failing,
    'agent_reachable', coalesce(a.reachable, false),
    'agent_error', a.last_error,
    'agent_address', a.address,
    'agent_checked_at', a.checked_at,
    'wal_archive_writable', CASE WHEN NOT v_pgbackrest THEN a.wal_archive_writable END,
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
      'note', CASE WHEN v_pgbackrest
                   THEN 'unused: with the pgbackrest backend WAL is archived into the stanza (see backend)'
                   ELSE 'segments before needed_from serve no kept snapshot and are pruned after each snapshot' END),
    'backend', v_backend,
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
