-- safe_upgrade--0.1.sql, part 09: approve() and cancel().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Approves an upgrade begun with require_approval, before or while it awaits approval.
CREATE FUNCTION @extschema@.approve(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_row @extschema@.upgrades := @extschema@._upgrade_to_change($1, 'approve an upgrade');
BEGIN
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
  PERFORM @extschema@._record_request(v_row.id, 'approved', 'info', format('approved by %s', session_user),
                                      jsonb_build_object('approved_by', session_user, 'state', v_row.state));
  RETURN v_row.state;
END
$fn$;

-- Asks the worker to cancel an upgrade that has not touched production.
CREATE FUNCTION @extschema@.cancel(upgrade_id bigint)
RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_has_restore_point boolean;
  v_row @extschema@.upgrades := @extschema@._upgrade_to_change($1, 'cancel an upgrade');
BEGIN
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
  PERFORM @extschema@._record_request(
    v_row.id, 'cancel_requested', 'info', format('cancellation requested by %s', session_user),
    jsonb_build_object('requested_by', session_user, 'state', v_row.state));
  RETURN v_row.state;
END
$fn$;
