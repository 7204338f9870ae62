-- Hostile names, versions and options: each is a clean error naming the value (shortened when
-- long), and nothing is created, dropped or written.
\pset format unaligned
\pset tuples_only on

CREATE TABLE canary (v int);
INSERT INTO canary VALUES (1);
SELECT catalog_fingerprint();

SELECT try_sql($$SELECT safe_upgrade.begin('hstore''; DROP TABLE canary; --', '1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore"; DROP TABLE canary; --', '1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8''; DROP TABLE canary; --')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8"; DROP TABLE canary; --')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8 CASCADE')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', E'1.8\n; DROP TABLE canary')$$);
SELECT try_sql($$SELECT safe_upgrade.plan('hstore', '1.4--1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.plan('hstore', '../../../etc/passwd')$$);
SELECT try_sql($$SELECT safe_upgrade.plan(E'hstore\\', '1.8')$$);
-- name truncates to 63 bytes; the message shows what the server compared.
SELECT try_sql(format('SELECT safe_upgrade.begin(%L, %L)', repeat('x', 100), '1.8'));
-- an overlong version is shortened in the message.
SELECT try_sql(format('SELECT safe_upgrade.begin(%L, %L)', 'hstore', repeat('9', 10000)));
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"lock_timeout": "1s; DROP TABLE canary"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"rollback_target": "cold''; DROP TABLE canary; --"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"recycle_sessions": "all''; DROP TABLE canary; --"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"x''); DROP TABLE canary; --": 1}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"not_before": "now''); DROP TABLE canary; --"}')$$);
SELECT concat_ws(' | ', object_type, object_identity)
  FROM safe_upgrade.dependency_rows('hstore''; DROP TABLE canary; --');

-- A health check's name and SQL are stored as given (the SQL is run later by the agent, as SQL;
-- it is never spliced into anything else).
SELECT try_sql($$SELECT safe_upgrade.add_health_check('it''s "quoted"; --', 'SELECT true; -- '' ";', NULL) > 0$$);
SELECT name, check_sql FROM safe_upgrade.health_checks WHERE name LIKE 'it%';
SELECT try_sql($$SELECT safe_upgrade.add_health_check('x', 'SELECT true', 'hstore''; DROP TABLE canary; --')$$);
DELETE FROM safe_upgrade.health_checks WHERE name LIKE 'it%';

-- database names reach SQL only as values.
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": ["x\"; DROP TABLE canary; --"]}')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('inj_db', 'SELECT true', NULL, '30 seconds', 'x''; DROP TABLE canary; --')$$);

SELECT count(*) FROM canary;
SELECT catalog_fingerprint();
DROP TABLE canary;
