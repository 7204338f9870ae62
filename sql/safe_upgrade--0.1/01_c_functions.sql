-- safe_upgrade--0.1.sql, part 01: the functions implemented in C++.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- ---------------------------------------------------------------------------------------------
-- Functions implemented in C++ (extension/src/pg)
-- ---------------------------------------------------------------------------------------------

-- What the background worker last saw of the agent. data_directory is shown only to roles that may
-- read the server's own data_directory setting (superusers, pg_read_all_settings). backend_*: the
-- agent's backend ('local' or 'pgbackrest'); for pgbackrest its stanza, the last `pgbackrest check`
-- (backend_check_ok NULL until one ran) and backend_summary, the stanza's status, repositories,
-- backups and newest archived segment as JSON text (at most 4 KB; see the agent's proto).
-- agent_role: the node the agent serves ('primary' or 'standby'); standby_agents: on a primary, the
-- standby agents it is configured with as it last pinged them, a JSON array of {name, agent,
-- reachable, error, role, system_identifier_matches, in_recovery, pg_rewind, data_directory,
-- checked_age_ms} (at most 4 KB: an element {"truncated": true} marks a list cut short; the
-- data_directory keys are hidden like data_directory); agent_pg_rewind: pg_rewind is in the agent's
-- bin_dir. All three are NULL when the agent did not report them (older agents). stale_libraries:
-- the shared objects the server's processes map that a package upgrade replaced on disk since they
-- were loaded, a JSON array of {library, path, reason ('deleted' or 'replaced'), pids} (at most 4 KB,
-- a {"truncated": true} element ends a list cut short; path is hidden like data_directory); NULL
-- from older agents.
CREATE FUNCTION @extschema@.agent_status(
  OUT reachable boolean, OUT agent_version text, OUT system_identifier numeric,
  OUT data_directory text, OUT address text, OUT last_error text, OUT checked_at timestamptz,
  OUT worker_pid integer, OUT snapshot_free_bytes bigint, OUT disk_reserve_bytes bigint,
  OUT wal_archive_writable boolean, OUT data_free_bytes bigint,
  OUT wal_archive_newest text, OUT wal_archive_oldest text, OUT wal_needed_from text,
  OUT wal_archive_files bigint, OUT wal_archive_bytes bigint,
  OUT snapshot_method_configured text, OUT snapshot_method text, OUT snapshot_method_reason text,
  OUT snapshot_method_possible boolean,
  OUT backend_kind text, OUT backend_stanza text, OUT backend_check_ok boolean, OUT backend_problem text,
  OUT backend_summary text, OUT backend_checked_at timestamptz,
  OUT agent_role text, OUT standby_agents jsonb, OUT agent_pg_rewind boolean, OUT stale_libraries jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'safe_upgrade_agent_status'
LANGUAGE C STRICT VOLATILE;

-- Wakes the background worker when the calling transaction commits.
CREATE FUNCTION @extschema@._wake_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'safe_upgrade_wake_worker_at_commit'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION @extschema@._wake_worker_at_commit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@._wake_worker_at_commit() TO safe_upgrade_operator;

-- Deterministic restore point name for an upgrade: su_<id>_<short system identifier>.
CREATE FUNCTION @extschema@.restore_point_name(upgrade_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'safe_upgrade_restore_point_name'
LANGUAGE C STRICT STABLE;
