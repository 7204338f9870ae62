-- Who may do what. PUBLIC reads (tables, plan, status, wait, agent_status); superusers and
-- members of safe_upgrade_operator change upgrades, only through the functions; nobody but
-- superusers writes the tables.
\pset format unaligned
\pset tuples_only on

INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state, options)
VALUES (800, 'ext_priv', '1.0', '2.0', 'awaiting_approval', '{"require_approval": true}'),
       (801, 'ext_priv_done', '1.0', '2.0', 'succeeded', '{}');
INSERT INTO safe_upgrade.events (upgrade_id, phase, message) VALUES (801, 'succeeded', 'state verifying -> succeeded');

-- A role without privileges: reading works, every change is refused with 42501.
SET SESSION AUTHORIZATION regress_su_nobody;
SELECT 'nobody reads ' || count(*) || ' upgrades' FROM safe_upgrade.upgrades WHERE id IN (800, 801);
SELECT 'plan verdict: ' || (safe_upgrade.plan('hstore', '1.8') ->> 'verdict');
SELECT 'status state: ' || (safe_upgrade.status(801) ->> 'state');
SELECT 'wait: ' || safe_upgrade.wait(801, '1 second');
SELECT 'agent reachable: ' || reachable FROM safe_upgrade.agent_status();
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.approve(800)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(800)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(801)$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('n', 'SELECT true')$$);
SELECT try_sql($$SELECT safe_upgrade._wake_worker_at_commit()::text$$);
SELECT try_sql($$UPDATE safe_upgrade.upgrades SET state = 'cancelled' WHERE id = 800$$);
SELECT try_sql($$DELETE FROM safe_upgrade.events$$);
SELECT try_sql($$INSERT INTO safe_upgrade.health_checks (name, check_sql) VALUES ('n', 'SELECT true')$$);
SELECT try_sql($$SELECT nextval('safe_upgrade.upgrades_id_seq')$$);
RESET SESSION AUTHORIZATION;

-- EXECUTE granted by mistake to a role outside safe_upgrade_operator is still refused, with a hint.
GRANT EXECUTE ON FUNCTION safe_upgrade.approve(bigint) TO regress_su_granted;
SET SESSION AUTHORIZATION regress_su_granted;
SELECT try_sql($$SELECT safe_upgrade.approve(800)$$);
RESET SESSION AUTHORIZATION;
REVOKE EXECUTE ON FUNCTION safe_upgrade.approve(bigint) FROM regress_su_granted;

-- An operator passes the privilege gate (begin() then stops at the PITR prerequisites) and acts
-- through the functions, but cannot write the tables or rewrite history.
SET SESSION AUTHORIZATION regress_su_op;
SELECT try_sql($$SELECT safe_upgrade.begin('hstore', '1.8')$$);
SELECT try_sql($$SELECT safe_upgrade.approve(800)$$);
SELECT try_sql($$SELECT safe_upgrade.approve(800)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(801)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(801)$$);
SELECT try_sql($$UPDATE safe_upgrade.upgrades SET state = 'succeeded' WHERE id = 800$$);
SELECT try_sql($$UPDATE safe_upgrade.events SET message = 'nothing happened' WHERE upgrade_id = 801$$);
SELECT try_sql($$DELETE FROM safe_upgrade.upgrades WHERE id = 801$$);
SELECT try_sql($$TRUNCATE safe_upgrade.events$$);
SELECT try_sql($$INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline) VALUES (801, 'fake', '0/1', 1)$$);
SELECT try_sql($$INSERT INTO safe_upgrade.events (upgrade_id, phase, message) VALUES (801, 'x', 'forged')$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('op_check', 'SELECT true', 'hstore') > 0$$);
SELECT try_sql($$SELECT safe_upgrade.add_health_check('op_check', 'SELECT false', 'hstore')$$);
RESET SESSION AUTHORIZATION;

-- What the operator's calls left: an approval by the operator and its event, the check created
-- by the operator, and history untouched.
SELECT id, state, approved_by FROM safe_upgrade.upgrades WHERE id IN (800, 801) ORDER BY id;
SELECT upgrade_id, phase, message FROM safe_upgrade.events WHERE upgrade_id IN (800, 801) ORDER BY id;
SELECT name, check_sql, created_by FROM safe_upgrade.health_checks WHERE name = 'op_check';
DELETE FROM safe_upgrade.health_checks WHERE name = 'op_check';
DELETE FROM safe_upgrade.events WHERE upgrade_id IN (800, 801);
DELETE FROM safe_upgrade.upgrades WHERE id IN (800, 801);
