-- approve(), cancel() and rollback() follow the state rules: in the wrong state they refuse with
-- 55000 and a hint naming the state, and change nothing; unknown ids are 22023. The rows are
-- written directly (the scheduler is off here), as the worker would have left them.
\pset format unaligned
\pset tuples_only on

INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state, options, report) VALUES
  (101, 'ext_a', '1.0', '2.0', 'succeeded',         '{}', '{}'),  -- never reached apply (no restore point)
  (102, 'ext_b', '1.0', '2.0', 'awaiting_approval', '{"require_approval": true}', '{}'),
  (103, 'ext_c', '1.0', '2.0', 'applying',          '{"require_approval": true}', '{}'),
  (104, 'ext_d', '1.0', '2.0', 'succeeded',         '{}', '{"apply": {"committed": true}}'),
  (105, 'ext_e', '1.0', '2.0', 'scheduled',         '{}', '{}'),
  (106, 'ext_f', '1.0', '2.0', 'cancelled',         '{}', '{}'),
  (107, 'ext_g', '1.0', '2.0', 'failed',            '{}', '{"apply": {"committed": true}}'),
  (108, 'ext_h', '1.0', '2.0', 'succeeded',         '{}', '{"apply": {"committed": true}}'),
  (109, 'ext_i', '1.0', '2.0', 'queued',            '{}', '{}'),
  (110, 'ext_j', '1.0', '2.0', 'validated',         '{"dry_run_only": true}', '{}'),
  (111, 'ext_k', '1.0', '2.0', 'failed',            '{}', '{}'),  -- failed before the apply
  (112, 'ext_h', '1.0', '2.0', 'succeeded',         '{}', '{"apply": {"committed": true}}'),
  (113, 'ext_l', '1.0', '2.0', 'snapshotting',      '{"require_approval": true}', '{}');
INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, created_at) VALUES
  (104, 'su_104_regress', '0/4000000', 1, '2030-01-01 00:04'),
  (105, 'su_105_regress', '0/5000000', 1, '2030-01-01 00:05'),
  (107, 'su_107_regress', '0/7000000', 1, '2030-01-01 00:07'),
  (108, 'su_108_regress', '0/8000000', 1, '2030-01-01 00:08'),
  (111, 'su_111_regress', '0/1100000', 1, '2029-12-31 23:00'),
  (112, 'su_112_regress', '0/1200000', 1, '2030-01-01 00:12');
CREATE TEMP TABLE before_calls AS SELECT * FROM safe_upgrade.upgrades;

-- Unknown and null ids.
SELECT try_sql($$SELECT safe_upgrade.approve(999)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(999)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(999)$$);
SELECT try_sql($$SELECT safe_upgrade.status(999)::text$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(NULL)$$);

-- approve(): only with require_approval, before the apply, once.
SELECT try_sql($$SELECT safe_upgrade.approve(101)$$);
SELECT try_sql($$SELECT safe_upgrade.approve(103)$$);
SELECT try_sql($$SELECT safe_upgrade.approve(113)$$);
SELECT try_sql($$SELECT safe_upgrade.approve(102)$$);
SELECT try_sql($$SELECT safe_upgrade.approve(102)$$);

-- cancel(): before production can change; asking twice is harmless.
SELECT try_sql($$SELECT safe_upgrade.cancel(101)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(106)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(103)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(105)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(109)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(109)$$);
SELECT try_sql($$SELECT safe_upgrade.cancel(102)$$);

-- rollback(): only succeeded/failed upgrades that reached the apply, newest restore point first,
-- and not while another upgrade of the extension is in flight.
SELECT try_sql($$SELECT safe_upgrade.rollback(101)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(111)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(103)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(106)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(109)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(110)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(107)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(108)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(112)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(112)$$);
-- 114 has the newest restore point, but 112 of the same extension is now rolling back.
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state, report)
VALUES (114, 'ext_h', '2.0', '3.0', 'failed', '{"apply": {"committed": true}}');
INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, created_at)
VALUES (114, 'su_114_regress', '0/1400000', 1, '2030-01-01 00:14');
SELECT try_sql($$SELECT safe_upgrade.rollback(114)$$);
SELECT state FROM safe_upgrade.upgrades WHERE id = 114;
-- 115 failed on a lock timeout: its apply never committed, so a PITR would only discard writes.
-- 116 is still verifying (its checks could not run) after a committed apply: an operator may roll
-- it back rather than wait.
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state, report) VALUES
  (115, 'ext_m', '1.0', '2.0', 'failed', '{"apply": {"committed": false, "error": "lock timeout"}}'),
  (116, 'ext_n', '1.0', '2.0', 'verifying', '{"apply": {"committed": true}}');
INSERT INTO safe_upgrade.restore_points (upgrade_id, name, lsn, timeline, created_at) VALUES
  (115, 'su_115_regress', '0/1500000', 1, '2030-01-01 00:15'),
  (116, 'su_116_regress', '0/1600000', 1, '2030-01-01 00:16');
SELECT try_sql($$SELECT safe_upgrade.rollback(115)$$);
SELECT try_sql($$SELECT safe_upgrade.rollback(116)$$);
SELECT id || ' ' || state FROM safe_upgrade.upgrades WHERE id IN (115, 116) ORDER BY id;

-- What changed, and only that.
SELECT b.id || ': ' || string_agg(x.key || ' ' || coalesce(x.before, 'null') || ' -> ' || coalesce(x.after, 'null'), ', ' ORDER BY x.key)
  FROM before_calls b JOIN safe_upgrade.upgrades u USING (id),
       LATERAL (SELECT k.key, to_jsonb(b) ->> k.key AS before, to_jsonb(u) ->> k.key AS after
                  FROM jsonb_object_keys(to_jsonb(u)) AS k(key)) x
 WHERE x.before IS DISTINCT FROM x.after
   AND x.key NOT IN ('updated_at', 'approved_at', 'rollback_requested_at', 'phase_started_at')
 GROUP BY b.id ORDER BY b.id;
SELECT id, (updated_at > now() - interval '1 hour') AS touched, approved_at IS NOT NULL AS approved,
       rollback_requested_at IS NOT NULL AS rollback_requested
  FROM safe_upgrade.upgrades WHERE id BETWEEN 101 AND 114 AND updated_at <> created_at ORDER BY id;
SELECT upgrade_id, phase, level, message FROM safe_upgrade.events WHERE upgrade_id BETWEEN 101 AND 114 ORDER BY id;

-- status(): the row, its events, its restore point and the dependency drift.
SELECT key FROM jsonb_object_keys(safe_upgrade.status(112)) key ORDER BY key;
SELECT s ->> 'state', s ->> 'terminal', s #>> '{restore_point,name}', jsonb_array_length(s -> 'events'),
       s #>> '{events,0,phase}', s -> 'dependency_drift'
  FROM safe_upgrade.status(112) s;
INSERT INTO safe_upgrade.dependency_snapshots VALUES
  (110, 'before', 'view', 'public', 'public.v_kept', 'function', 'public.f(integer)', 'n'),
  (110, 'before', 'view', 'public', 'public.v_lost', 'function', 'public.g(integer)', 'n'),
  (110, 'after',  'view', 'public', 'public.v_kept', 'function', 'public.f(integer)', 'n'),
  (110, 'after',  'index', 'public', 'public.i_new', 'operator class', 'public.ops USING gist', 'n');
SELECT safe_upgrade.status(110) -> 'dependency_drift';
UPDATE safe_upgrade.upgrades SET report = '{"dry_run": {"dependency_after": []}}' WHERE id = 109;
SELECT safe_upgrade.status(109) -> 'dependency_drift';
SELECT safe_upgrade.status(101) -> 'restore_point', safe_upgrade.status(101) -> 'terminal';

DELETE FROM safe_upgrade.dependency_snapshots WHERE upgrade_id BETWEEN 101 AND 114;
DELETE FROM safe_upgrade.events WHERE upgrade_id BETWEEN 101 AND 114;
DELETE FROM safe_upgrade.restore_points WHERE upgrade_id BETWEEN 101 AND 114;
DELETE FROM safe_upgrade.upgrades WHERE id BETWEEN 101 AND 114;
