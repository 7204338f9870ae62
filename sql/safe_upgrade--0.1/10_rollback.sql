-- safe_upgrade--0.1.sql, part 10: rollback().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Rolls back an upgrade that reached production, by point-in-time recovery to its restore point.
CREATE FUNCTION @extschema@.rollback(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_rp @extschema@.restore_points;
  v_row @extschema@.upgrades := @extschema@._upgrade_to_change($1, 'roll back an upgrade');
  v_later record;
  v_other record;
  v_constraint text;
  v_version text;
BEGIN
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
    IF v_constraint IS DISTINCT FROM 'upgrades_one_in_flight' THEN RAISE; END IF;
    SELECT f.id, f.state INTO v_other FROM @extschema@._in_flight_upgrade(v_row.extname) f;
    RAISE EXCEPTION USING ERRCODE = '55006',
      MESSAGE = format('cannot roll back upgrade %s: upgrade %s of extension "%s" is in flight',
                       v_row.id, coalesce(v_other.id::text, 'another'), v_row.extname),
      HINT = 'Wait for the other upgrade to finish (safe_upgrade.wait()) or cancel it, then roll back.';
  END;
  PERFORM @extschema@._record_request(
    v_row.id, 'rolling_back', 'warning',
    format('rollback to restore point %s requested by %s; every write committed after it will be lost',
           v_rp.name, session_user),
    jsonb_build_object('requested_by', session_user, 'from', v_row.state, 'to', 'rolling_back',
                       'restore_point', v_rp.name, 'lsn', v_rp.lsn::text));
  RETURN 'rolling_back';
END
$fn$;
