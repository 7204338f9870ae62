-- wait(): returns a terminal state at once, warns and returns the current state on timeout, and
-- refuses when it could never see progress: inside the transaction that created or changed the
-- upgrade, and under REPEATABLE READ or SERIALIZABLE.
\pset format unaligned
\pset tuples_only on

INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state, options) VALUES
  (201, 'ext_w1', '1.0', '2.0', 'rolled_back', '{}'),
  (202, 'ext_w2', '1.0', '2.0', 'awaiting_approval', '{"require_approval": true}');

SELECT safe_upgrade.wait(201);
SELECT safe_upgrade.wait(202, '0');
SELECT safe_upgrade.wait(202, '300 milliseconds');
SELECT try_sql($$SELECT safe_upgrade.wait(999)$$);
SELECT try_sql($$SELECT safe_upgrade.wait(NULL)$$);
SELECT try_sql($$SELECT safe_upgrade.wait(201, '-1 second')$$);
SELECT try_sql($$SELECT safe_upgrade.wait(201, NULL)$$);

-- Created in this transaction: the worker cannot see it until COMMIT.
BEGIN;
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version) VALUES (203, 'ext_w3', '1.0', '2.0');
SELECT try_sql($$SELECT safe_upgrade.wait(203, '10 seconds')$$);
-- also when the insert happened in a subtransaction (as begin() does) that was released
SAVEPOINT s;
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version) VALUES (204, 'ext_w4', '1.0', '2.0');
RELEASE SAVEPOINT s;
SELECT try_sql($$SELECT safe_upgrade.wait(204, '10 seconds')$$);
-- other upgrades can still be waited for in this transaction
SELECT try_sql($$SELECT safe_upgrade.wait(201)$$);
ROLLBACK;

-- Changed in this transaction (approved): the worker would block on the row lock until COMMIT.
BEGIN;
SELECT safe_upgrade.approve(202);
SELECT try_sql($$SELECT safe_upgrade.wait(202, '10 seconds')$$);
ROLLBACK;

BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try_sql($$SELECT safe_upgrade.wait(201)$$);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT try_sql($$SELECT safe_upgrade.wait(201)$$);
ROLLBACK;

DELETE FROM safe_upgrade.upgrades WHERE id IN (201, 202);
