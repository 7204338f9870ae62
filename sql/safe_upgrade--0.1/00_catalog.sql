-- safe_upgrade 0.1: catalog, roles and the SQL surface.
-- safe_upgrade--0.1.sql, part 00: the operator role, the catalog tables (kept in dumps) and their read access.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)
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
  options          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
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

-- One row per database an upgrade covers: where it starts, its hops, and what each phase found
-- there (report: dry_run, apply, verify). A point-in-time recovery rewinds these rows with the
-- rest of the cluster; the agent writes the outcome back.
CREATE TABLE @extschema@.upgrade_databases (
  upgrade_id    bigint NOT NULL REFERENCES @extschema@.upgrades (id),
  datname       name NOT NULL,
  from_version  text NOT NULL,
  update_path   text[] NOT NULL,
  -- The extensions that require this one and are upgraded with it, right after it in the same
  -- transaction (PostGIS's raster, topology, ...): [{extname, from_version, update_path}].
  family        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(family) = 'array'),
  outcome       text NOT NULL DEFAULT 'pending' CHECK (outcome IN (
                  'pending', 'dry_run_passed', 'dry_run_failed', 'applied', 'not_applied',
                  'verified', 'verify_failed', 'rolled_back')),
  report        jsonb NOT NULL DEFAULT '{}',
  error         text,
  PRIMARY KEY (upgrade_id, datname)
);

-- One row per streaming standby of the primary when an upgrade began (safe_upgrade._standbys()):
-- whether it can be rewound and has an agent, and what became of it after a rollback. begin()
-- inserts the rows ('pending'); only the agent changes them, after a rollback: it rewinds each
-- standby with an agent (pg_rewind, else a new clone) and writes the outcome back with the rest
-- of the upgrade's outcome (a point-in-time recovery rewinds these rows too).
CREATE TABLE @extschema@.upgrade_standbys (
  upgrade_id    bigint NOT NULL REFERENCES @extschema@.upgrades (id) ON DELETE CASCADE,
  name          text NOT NULL,  -- its application_name, the name of its agent in the agent's configuration
  client_addr   text,
  sync_state    text,
  slot_name     text,
  rewindable    boolean,
  has_agent     boolean,        -- NULL: the agent did not say which standby agents it has
  outcome       text NOT NULL DEFAULT 'pending' CHECK (outcome IN (
                  'pending', 'streaming', 'rewound', 'recloned', 'failed', 'unreachable', 'no_agent')),
  error         text,
  detail        jsonb NOT NULL DEFAULT '{}',
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (upgrade_id, name)
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
  datname           name NOT NULL DEFAULT current_database(),  -- the database the object lives in
  PRIMARY KEY (upgrade_id, datname, phase, object_type, object_identity, depends_on_type, depends_on_identity)
);

CREATE TABLE @extschema@.health_checks (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
  extname     name,
  check_sql   text NOT NULL CHECK (btrim(check_sql) <> ''),
  timeout     interval NOT NULL DEFAULT '30 seconds' CHECK (timeout > interval '0'),
  created_by  name NOT NULL DEFAULT session_user,
  created_at  timestamptz NOT NULL DEFAULT now(),
  datname     name  -- the database it runs in; NULL: every database of the upgrade
);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrades_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.restore_points', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrade_databases', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upgrade_standbys', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.dependency_snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.health_checks_id_seq', '');

REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA @extschema@ TO PUBLIC;
