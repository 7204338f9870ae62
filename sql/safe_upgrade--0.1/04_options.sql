-- safe_upgrade--0.1.sql, part 04: begin() options, checked and normalized.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Raises 22023: option $1 must be $2, not the value $3; $4 is the hint.
CREATE FUNCTION @extschema@._invalid_option(option text, expected text, value jsonb, hint text)
RETURNS void LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '22023',
    MESSAGE = format('option "%s" must be %s, not %s', $1, $2, @extschema@._for_message($3::text)), HINT = $4;
END
$fn$;

-- Option $2 of options $1, one of the words $3 (the first is the default, for an absent or null
-- option), in lower case; raises 22023 with hint $4 for anything else.
CREATE FUNCTION @extschema@._choice_option(options jsonb, option text, choices text[], hint text)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_value jsonb := $1 -> $2;
BEGIN
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    RETURN $3[1];
  ELSIF jsonb_typeof(v_value) = 'string' AND lower(v_value #>> '{}') = ANY ($3) THEN
    RETURN lower(v_value #>> '{}');
  END IF;
  PERFORM @extschema@._invalid_option($2, array_to_string($3[1:cardinality($3) - 1], ', ') || ' or '
                                          || $3[cardinality($3)], v_value, $4);
  RETURN NULL;
END
$fn$;

-- begin() options with their defaults filled in and their values checked and normalized:
-- booleans as JSON booleans, not_before as a timestamp, lock_timeout as "<n>ms" (what both an
-- interval and the lock_timeout setting accept), max_lock_retries as a JSON number.
CREATE FUNCTION @extschema@._normalize_options(options jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_in jsonb := coalesce($1, '{}'::jsonb);
  v_out jsonb := '{}'::jsonb;
  v_key text;
  v_value jsonb;
  v_text text;
  v_ts timestamptz;
  v_interval interval;
  v_ms numeric;
  v_int numeric;
  c_keys constant text[] := ARRAY['dry_run_only', 'auto_rollback', 'require_approval', 'not_before',
                                  'lock_timeout', 'max_lock_retries', 'rollback_target', 'databases',
                                  'recycle_sessions'];
  c_valid constant text := 'Valid options are dry_run_only, auto_rollback, require_approval (booleans), '
                           'not_before (a timestamp), lock_timeout (an interval such as "2s"), '
                           'max_lock_retries (0 to 100), rollback_target (auto, ready or cold), databases '
                           '(a JSON array of database names) and recycle_sessions (none, idle or all).';
BEGIN
  IF jsonb_typeof(v_in) <> 'object' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('options must be a JSON object, not %s',
                                                              jsonb_typeof(v_in)),
      HINT = 'Pass options as an object, for example ''{"dry_run_only": true}''.';
  END IF;
  FOR v_key IN SELECT k FROM jsonb_object_keys(v_in) AS k ORDER BY k LOOP
    IF NOT v_key = ANY (c_keys) THEN
      RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('unknown option "%s"',
                                                                @extschema@._for_message(v_key)),
        HINT = c_valid;
    END IF;
  END LOOP;

  FOREACH v_key IN ARRAY ARRAY['dry_run_only', 'auto_rollback', 'require_approval'] LOOP
    v_value := v_in -> v_key;
    IF v_value IS NULL OR v_value = 'null'::jsonb THEN
      v_out := v_out || jsonb_build_object(v_key, v_key = 'auto_rollback');
    ELSIF jsonb_typeof(v_value) = 'boolean' THEN
      v_out := v_out || jsonb_build_object(v_key, v_value);
    ELSIF jsonb_typeof(v_value) = 'string' AND lower(v_value #>> '{}') IN ('true', 'on', 'false', 'off') THEN
      v_out := v_out || jsonb_build_object(v_key, lower(v_value #>> '{}') IN ('true', 'on'));
    ELSE
      PERFORM @extschema@._invalid_option(v_key, 'a boolean', v_value,
        format('Use true or false, for example ''{"%s": true}''.', v_key));
    END IF;
  END LOOP;

  -- not_before and lock_timeout: a JSON string cast to its type (NULL when it does not cast), or
  -- the default when the option is absent or null.
  v_value := v_in -> 'not_before';
  v_text := CASE WHEN jsonb_typeof(v_value) = 'string' THEN v_value #>> '{}' END;
  BEGIN v_ts := v_text::timestamptz; EXCEPTION WHEN data_exception THEN v_ts := NULL; END;
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_ts := now();
  ELSIF v_ts IS NULL OR NOT isfinite(v_ts) THEN
    PERFORM @extschema@._invalid_option('not_before', 'a timestamp', v_value,
      'Use a finite timestamp with a time zone, for example ''{"not_before": "2030-01-01 02:00:00+00"}''.');
  END IF;
  v_out := v_out || jsonb_build_object('not_before', v_ts);

  v_value := v_in -> 'lock_timeout';
  v_text := CASE WHEN jsonb_typeof(v_value) = 'string' THEN v_value #>> '{}' END;
  BEGIN v_interval := v_text::interval; EXCEPTION WHEN data_exception THEN v_interval := NULL; END;
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN v_interval := interval '2 seconds'; END IF;
  v_ms := round(extract(epoch FROM v_interval) * 1000);
  IF v_ms IS NULL OR v_ms < 1 OR v_ms > 3600000 THEN
    PERFORM @extschema@._invalid_option('lock_timeout', 'an interval between 1ms and 1 hour', v_value,
      'Use an interval string, for example ''{"lock_timeout": "2s"}''; '
      'the upgrade gives up waiting for a lock after it and retries.');
  END IF;
  v_out := v_out || jsonb_build_object('lock_timeout', v_ms::bigint || 'ms');

  v_value := v_in -> 'max_lock_retries';
  IF v_value IS NULL OR v_value = 'null'::jsonb THEN
    v_int := 5;
  ELSIF jsonb_typeof(v_value) = 'number' THEN
    v_int := v_value::numeric;
  ELSIF jsonb_typeof(v_value) = 'string' AND (v_value #>> '{}') ~ '^\s*[0-9]{1,3}\s*$' THEN
    v_int := (v_value #>> '{}')::numeric;
  END IF;
  IF v_int IS NULL OR v_int <> trunc(v_int) OR v_int < 0 OR v_int > 100 THEN
    PERFORM @extschema@._invalid_option('max_lock_retries', 'an integer between 0 and 100', v_value,
      'Use a whole number, for example ''{"max_lock_retries": 5}''.');
  END IF;
  v_out := v_out || jsonb_build_object('max_lock_retries', v_int::integer);

  v_out := v_out || jsonb_build_object('rollback_target', @extschema@._choice_option(v_in, 'rollback_target',
    ARRAY['auto', 'ready', 'cold'], 'Use "auto" (a parked target when the disk allows), "ready" (require one) or '
    '"cold" (restore the snapshot), for example ''{"rollback_target": "cold"}''.'));
  -- recycle_sessions: which sessions still running an old copy of the extension's library the agent
  -- terminates after a successful apply (only client backends; none by default).
  v_out := v_out || jsonb_build_object('recycle_sessions', @extschema@._choice_option(v_in, 'recycle_sessions',
    ARRAY['none', 'idle', 'all'], 'Use "none" (name the sessions on the old library, end none), "idle" (end those '
    'that are idle) or "all" (end every client backend on it), for example ''{"recycle_sessions": "idle"}''.'));

  v_value := v_in -> 'databases';
  IF v_value IS NOT NULL AND v_value <> 'null'::jsonb THEN
    IF jsonb_typeof(v_value) <> 'array' OR jsonb_array_length(v_value) = 0
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_value) x
                   WHERE jsonb_typeof(x) <> 'string' OR btrim(x #>> '{}') = '') THEN
      PERFORM @extschema@._invalid_option('databases', 'a non-empty JSON array of database names', v_value,
        'Name the databases to upgrade, for example ''{"databases": ["app", "reporting"]}'', '
        'or leave the option out to upgrade the extension in every database that has it.');
    END IF;
    IF (SELECT count(DISTINCT x) <> count(*) FROM jsonb_array_elements_text(v_value) x) THEN
      RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('option "databases" names a database twice: %s', @extschema@._for_message(v_value::text)),
        HINT = 'Name each database once.';
    END IF;
    v_out := v_out || jsonb_build_object('databases',
                                         (SELECT jsonb_agg(x ORDER BY x) FROM jsonb_array_elements_text(v_value) x));
  END IF;
  RETURN v_out;
END
$fn$;
