-- safe_upgrade--0.1.sql, part 08: status() and wait().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- The whole story of one upgrade: its row, its databases and standbys, its events, its restore point,
-- the drift of the objects that depend on the extension (before vs after the upgrade, once the dry
-- run has run), the sessions left on an old copy of its libraries.
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
  v_standbys jsonb;
BEGIN
  v_row := @extschema@._upgrade_or_error($1, false);
  SELECT coalesce(jsonb_agg(to_jsonb(d) - 'upgrade_id' ORDER BY d.datname), '[]'::jsonb) INTO v_databases
    FROM @extschema@.upgrade_databases d WHERE d.upgrade_id = v_row.id;
  SELECT coalesce(jsonb_agg(to_jsonb(s) - 'upgrade_id' ORDER BY s.name), '[]'::jsonb) INTO v_standbys
    FROM @extschema@.upgrade_standbys s WHERE s.upgrade_id = v_row.id;
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
    'standbys', v_standbys,
    'events', v_events,
    'restore_point', v_restore_point,
    'dependency_drift', v_drift,
    -- The processes on an old copy of the extension's libraries the apply saw before and after it
    -- committed, and which ones recycle_sessions ended (null until the apply looked).
    'stale_sessions', CASE WHEN v_row.report -> 'apply' ? 'stale_sessions_before' THEN jsonb_build_object(
                        'before_apply', v_row.report -> 'apply' -> 'stale_sessions_before',
                        'after_apply', v_row.report -> 'apply' -> 'stale_sessions',
                        'recycled', v_row.report -> 'apply' -> 'recycled_sessions') END);
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
