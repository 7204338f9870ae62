-- Creates the extension and the helpers the other tests use.
CREATE EXTENSION safe_upgrade;
CREATE EXTENSION hstore VERSION '1.4';

-- Runs one statement and shows its outcome as one line per field: "ok: <first value>", or the
-- error's SQLSTATE, message and hint. Errors are caught in a subtransaction, so a failing
-- statement leaves nothing behind.
CREATE FUNCTION try_sql(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_state text;
  v_message text;
  v_hint text;
  v_result text;
  v_rows bigint;
BEGIN
  IF stmt ~* '^\s*(SELECT|WITH|VALUES)\M' THEN
    EXECUTE stmt INTO v_result;
  ELSE
    EXECUTE stmt;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_result := v_rows || ' rows';
  END IF;
  RETURN 'ok: ' || coalesce(v_result, 'NULL');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
  RETURN v_state || ': ' || v_message || E'\n  HINT: ' || coalesce(nullif(v_hint, ''), '(none)');
END
$$;

-- A fingerprint of everything the API may write, to show that refused calls change nothing.
CREATE FUNCTION catalog_fingerprint() RETURNS text LANGUAGE sql AS $$
  SELECT format('upgrades=%s events=%s restore_points=%s dependency_snapshots=%s health_checks=%s hstore=%s',
                (SELECT count(*) FROM safe_upgrade.upgrades), (SELECT count(*) FROM safe_upgrade.events),
                (SELECT count(*) FROM safe_upgrade.restore_points),
                (SELECT count(*) FROM safe_upgrade.dependency_snapshots),
                (SELECT count(*) FROM safe_upgrade.health_checks),
                (SELECT extversion FROM pg_extension WHERE extname = 'hstore'))
$$;

CREATE ROLE regress_su_nobody;
CREATE ROLE regress_su_op IN ROLE safe_upgrade_operator;
CREATE ROLE regress_su_granted;
