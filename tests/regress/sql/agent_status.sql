-- agent_status() without an agent: unreachable, with a reason, and no disk facts.
\pset format unaligned
\pset tuples_only on
SELECT 'reachable=' || reachable, 'has_error=' || (last_error IS NOT NULL),
       'free_bytes_null=' || (snapshot_free_bytes IS NULL), 'archive_writable_null=' || (wal_archive_writable IS NULL)
  FROM safe_upgrade.agent_status();
-- plan() reports the same, as blocking reasons.
SELECT 'agent_reachable=' || (safe_upgrade.plan('hstore', '1.8') #>> '{pitr,agent_reachable}');
SELECT 'enough_disk=' || coalesce(safe_upgrade.plan('hstore', '1.8') #>> '{pitr,enough_disk}', 'unknown');
SELECT r FROM jsonb_array_elements_text(safe_upgrade.plan('hstore', '1.8') -> 'reasons') r
 WHERE r NOT LIKE 'the safe-upgrade agent is unreachable: %';
SELECT 'agent reason present=' || EXISTS (
  SELECT 1 FROM jsonb_array_elements_text(safe_upgrade.plan('hstore', '1.8') -> 'reasons') r
   WHERE r LIKE 'the safe-upgrade agent is unreachable: %');
