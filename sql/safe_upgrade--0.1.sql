-- safe_upgrade 0.1: catalog, roles and the SQL surface.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION safe_upgrade" to load this file. \quit

DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'safe_upgrade_operator') THEN
    CREATE ROLE safe_upgrade_operator NOLOGIN;
  END IF;
END
$roles$;

-- ---------------------------------------------------------------------------------------------
-- Catalog
-- ---------------------------------------------------------------------------------------------

CREATE TABLE @extschema@.upgrades (
  id               bigserial PRIMARY KEY,
  extname          name NOT NULL,
  from_version     text NOT NULL,
  to_version       text NOT NULL,
  update_path      text[] NOT NULL DEFAULT '{}',
  state            text NOT NULL DEFAULT 'queued' CHECK (state IN (
                     'queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled',
                     'applying', 'verifying', 'rolling_back',
                     'succeeded', 'validated', 'blocked', 'failed', 'rolled_back', 'rollback_failed',
                     'cancelled')),
  options          jsonb NOT NULL DEFAULT '{}',
  created_by       name NOT NULL DEFAULT session_user,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  not_before       timestamptz NOT NULL DEFAULT now(),
  approved_at      timestamptz,
  approved_by      name,
  cancel_requested boolean NOT NULL DEFAULT false,
  rollback_requested_at timestamptz,
  -- the agent job the worker follows, and how far its events were copied
  agent_job        text,
  agent_job_cursor bigint NOT NULL DEFAULT 0,
  progress         double precision,
  phase_started_at timestamptz,
  snapshot         jsonb,
  report           jsonb NOT NULL DEFAULT '{}',
  error            text
);

-- At most one in-flight upgrade per extension, enforced by the database even under concurrency.
CREATE UNIQUE INDEX upgrades_one_in_flight ON @extschema@.upgrades (extname)
  WHERE state IN ('queued', 'snapshotting', 'dry_running', 'awaiting_approval', 'scheduled',
                  'applying', 'verifying', 'rolling_back');

CREATE TABLE @extschema@.events (
  id          bigserial PRIMARY KEY,
  upgrade_id  bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  phase       text NOT NULL,
  level       text NOT NULL DEFAULT 'info' CHECK (level IN ('info', 'warning', 'error')),
  message     text NOT NULL,
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_upgrade_id ON @extschema@.events (upgrade_id, id);

CREATE TABLE @extschema@.restore_points (
  upgrade_id      bigint PRIMARY KEY REFERENCES @extschema@.upgrades (id),
  name            text NOT NULL UNIQUE CHECK (octet_length(name) <= 63),
  lsn             pg_lsn NOT NULL,
  timeline        integer NOT NULL,
  xid             xid8,
  backup_stop_lsn pg_lsn,
  wal_segment     text,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE @extschema@.dependency_snapshots (
  upgrade_id        bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  phase             text NOT NULL CHECK (phase IN ('before', 'after')),
  object_type       text NOT NULL,
  object_schema     text,
  object_identity   text NOT NULL,
  depends_on_type   text NOT NULL,
  depends_on_identity text NOT NULL,
  deptype           "char" NOT NULL,
  PRIMARY KEY (upgrade_id, phase, object_type, object_identity, depends_on_type, depends_on_identity)
);

CREATE TABLE @extschema@.health_checks (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  extname     name,
  check_sql   text NOT NULL,
  timeout     interval NOT NULL DEFAULT '30 seconds',
  created_by  name NOT NULL DEFAULT session_user,
  created_at  timestamptz NOT NULL DEFAULT now()
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.restore_points', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.dependency_snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA @extschema@ TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Functions implemented in C++ (extension/src/pg)
-- ---------------------------------------------------------------------------------------------

-- What the background worker last saw of the agent.
CREATE FUNCTION @extschema@.agent_status(
  OUT reachable boolean, OUT agent_version text, OUT system_identifier numeric,
  OUT data_directory text, OUT address text, OUT last_error text, OUT checked_at timestamptz,
  OUT worker_pid integer, OUT snapshot_free_bytes bigint, OUT disk_reserve_bytes bigint,
  OUT wal_archive_writable boolean)
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
