-- add_health_check(): validation, duplicate names, unknown extensions, defaults.
\pset format unaligned
\pset tuples_only on

SELECT try_sql($$SELECT safe_upgrade.add_health_check('docs_answer', 'SELECT count(*) >= 0 FROM docs', 'hstore') > 0$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('any_upgrade', 'SELECT true') > 0$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('slow_one', 'SELECT pg_sleep(1) IS NOT NULL', NULL, '5 seconds') > 0$$);
SELECT name, extname, check_sql, timeout, created_by = current_user AS by_me
  FROM safe_upgrade.health_checks ORDER BY id;

SELECT try_sql($$SELECT safe_upgrade.add_health_check('docs_answer', 'SELECT false')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('', 'SELECT true')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('   ', 'SELECT true')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check(NULL, 'SELECT true')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('empty_sql', '')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('null_sql', NULL)$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('bad_ext', 'SELECT true', 'no_such_extension')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('zero_timeout', 'SELECT true', NULL, '0')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('long_timeout', 'SELECT true', NULL, '2 hours')$$);
SELECT try_sql(format('SELECT safe_upgrade.add_health_check(%L, %L)', repeat('n', 300), 'SELECT true'));
-- An extension that is available but not installed is accepted (a check can be set up first).
SELECT try_sql($$SELECT safe_upgrade.add_health_check('seg_ready', 'SELECT true', 'seg') > 0$$);
SELECT count(*) FROM safe_upgrade.health_checks;
DELETE FROM safe_upgrade.health_checks;
-- A check may name the database it runs in; it must exist.
SELECT try_sql($$SELECT safe_upgrade.add_health_check('in_no_db', 'SELECT true', NULL, '30 seconds', 'no_such_db')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('in_this_db', 'SELECT true', NULL, '30 seconds', current_database()) > 0$$);
SELECT datname = current_database() FROM safe_upgrade.health_checks WHERE name = 'in_this_db';
DELETE FROM safe_upgrade.health_checks;
