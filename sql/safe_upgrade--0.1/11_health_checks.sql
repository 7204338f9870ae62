-- safe_upgrade--0.1.sql, part 11: add_health_check().
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Registers a health check: a query that must return true after an upgrade (on the dry-run clone
-- and on production). extname NULL means every upgrade.
CREATE FUNCTION @extschema@.add_health_check(name text, check_sql text, extname name DEFAULT NULL,
                                             timeout interval DEFAULT '30 seconds', database name DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_name text := $1;
  v_id bigint;
  v_sql text := $2;
  v_ext name := $3;
  v_timeout interval := $4;
  v_database name := $5;
BEGIN
  PERFORM @extschema@._require_operator('add a health check');
  IF v_name IS NULL OR btrim(v_name) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check name must not be empty',
      HINT = 'Give the check a short descriptive name, for example ''orders_view_answers''.';
  END IF;
  IF length(v_name) > 200 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check name is too long (over 200 characters)',
      HINT = 'Give the check a short descriptive name.';
  END IF;
  IF v_sql IS NULL OR btrim(v_sql) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check SQL must not be empty',
      HINT = 'Pass a query that returns true when the database is healthy, '
             'for example ''SELECT count(*) > 0 FROM orders_view''.';
  END IF;
  IF v_timeout IS NULL OR v_timeout <= interval '0' OR v_timeout > interval '1 hour' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'health check timeout must be more than 0 and at most 1 hour',
      HINT = 'Pass an interval such as ''30 seconds''.';
  END IF;
  IF v_ext IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = v_ext)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = v_ext) THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('extension "%s" does not exist', @extschema@._for_message(v_ext)),
      HINT = 'Check the name against SELECT name FROM pg_available_extensions, '
             'or pass NULL to run the check for every upgrade.';
  END IF;
  IF v_database IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = v_database) THEN
    RAISE EXCEPTION USING ERRCODE = '42704',
      MESSAGE = format('database "%s" does not exist', @extschema@._for_message(v_database)),
      HINT = 'Name a database listed by SELECT datname FROM pg_database, '
             'or pass NULL to run the check in every database of the upgrade.';
  END IF;
  BEGIN
    INSERT INTO @extschema@.health_checks (name, check_sql, extname, timeout, datname)
    VALUES (v_name, v_sql, v_ext, v_timeout, v_database)
    RETURNING id INTO v_id;
  EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING ERRCODE = '42710',
      MESSAGE = format('health check "%s" already exists', @extschema@._for_message(v_name)),
      HINT = format('Choose another name, or have a superuser remove the old check with '
                    'DELETE FROM safe_upgrade.health_checks WHERE name = %L.',
                    @extschema@._for_message(v_name));
  END;
  RETURN v_id;
END
$fn$;
