-- begin() and plan() refuse bad requests with the SQLSTATEs of DESIGN.md and a hint, and write
-- nothing when they do.
\pset format unaligned
\pset tuples_only on

-- 42704: unknown or not installed extension.
SELECT try_sql($$SELECT safe_upgrade.begin('no_such_extension', '1.0')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('seg', '1.4')$$);
SELECT try_sql($$SELECT safe_upgrade.plan('no_such_extension', '1.0')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('', '1.0')$$);
SELECT try_sql($$SELECT safe_upgrade.begin(NULL, '1.0')$$);

-- 22023: bad target version.
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '9.9')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.4')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', NULL)$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '  ')$$);
SELECT try_sql($$SELECT safe_upgrade.plan('hstore', '1.4')$$);
CREATE EXTENSION citext;
SELECT try_sql($$SELECT safe_upgrade.begin('citext', '1.4')$$);
SELECT try_sql($$SELECT safe_upgrade.plan('citext', '1.4')$$);

-- 0A000: the extension does not upgrade itself.
SELECT try_sql($$SELECT safe_upgrade.begin('safe_upgrade', '0.2')$$);

-- 22023: options.
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"no_such_option": true}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '[true]')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '"dry_run_only"')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"dry_run_only": "maybe"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"auto_rollback": 1}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"not_before": "next tuesday-ish"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"not_before": 12}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"lock_timeout": "soon"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"lock_timeout": "0"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"lock_timeout": 2}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"lock_timeout": "2 days"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"max_lock_retries": -1}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"max_lock_retries": 101}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"max_lock_retries": 2.5}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"max_lock_retries": "five"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"rollback_target": "fast"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"rollback_target": true}')$$);
SELECT safe_upgrade._normalize_options('{"rollback_target": "COLD"}') ->> 'rollback_target';
-- recycle_sessions: none (the default), idle or all.
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"recycle_sessions": "some"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"recycle_sessions": 1}')$$);
SELECT safe_upgrade._normalize_options('{}') ->> 'recycle_sessions',
       safe_upgrade._normalize_options('{"recycle_sessions": "IDLE"}') ->> 'recycle_sessions';

-- databases: a non-empty array of distinct names of databases that exist, allow connections and
-- have the extension at a version with an update path.
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": "su_regression"}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": []}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": [1]}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": [""]}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": ["su_regression", "su_regression"]}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": ["no_such_db", "su_regression"]}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": ["postgres"]}')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"databases": ["template1"]}')$$);
SELECT safe_upgrade._normalize_options('{"databases": ["b", "a"]}') -> 'databases';
-- plan() lists the databases that have the extension, and those it skips with the reason.
SELECT d ->> 'datname', d ->> 'installed_version', d -> 'update_path'
  FROM jsonb_array_elements(safe_upgrade.plan('hstore', '1.8') -> 'databases') d;
SELECT d ->> 'datname', d ->> 'reason' FROM jsonb_array_elements(safe_upgrade.plan('hstore', '1.8') -> 'skipped_databases') d;

-- The normalized options begin() stores: defaults filled in, values in one form.
SELECT safe_upgrade._normalize_options('{}') - 'not_before';
SELECT safe_upgrade._normalize_options(NULL) - 'not_before';
SELECT safe_upgrade._normalize_options('{"dry_run_only": "on", "auto_rollback": false, "require_approval": "TRUE",
                                         "not_before": "2030-01-02 03:04:05+00", "lock_timeout": "1.5 min",
                                         "max_lock_retries": "7"}');
SELECT safe_upgrade._normalize_options('{"lock_timeout": "250ms", "max_lock_retries": 0, "not_before": null}') - 'not_before';
SELECT (safe_upgrade._normalize_options('{}') ->> 'not_before')::timestamptz = now();

-- 55006: another upgrade of the extension is in flight (checked before the PITR prerequisites).
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state)
VALUES (900, 'hstore', '1.4', '1.8', 'dry_running');
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8')$$);
SELECT r FROM jsonb_array_elements_text(safe_upgrade.plan('hstore', '1.8') -> 'reasons') r WHERE r LIKE 'upgrade %';
SELECT safe_upgrade.plan('hstore', '1.8') -> 'in_flight_upgrade';
DELETE FROM safe_upgrade.upgrades WHERE id = 900;

-- 55000: PITR prerequisites (archive_mode is off and no agent answers here).
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8', '{"dry_run_only": true}')$$);

SELECT catalog_fingerprint();
