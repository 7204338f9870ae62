-- Standbys on the database side: _standbys() on a server that has none, what plan() shows and
-- warns about them (the warnings from a standby list written by hand, since no standby streams
-- here), the upgrade_standbys table's outcomes, and status()'s standbys.
\pset format unaligned
\pset tuples_only on

-- No walsender and no agent: an empty list, no warnings, and agent_status() reports nothing of them.
SELECT 'standbys=' || safe_upgrade._standbys()::text;
SELECT 'plan standbys=' || (p -> 'standbys')::text, 'warnings=' || (p -> 'warnings')::text,
       'warning_hints=' || (p -> 'warning_hints')::text, 'rollback.standbys=' || (p #>> '{rollback,standbys}')
  FROM safe_upgrade.plan('hstore', '1.8') p;
SELECT 'role_null=' || (agent_role IS NULL), 'standby_agents_null=' || (standby_agents IS NULL),
       'pg_rewind_null=' || (agent_pg_rewind IS NULL)
  FROM safe_upgrade.agent_status();
-- Any role may call it (client_addr and data directories follow the session user's privileges).
SET ROLE regress_su_nobody;
SELECT 'as nobody=' || safe_upgrade._standbys()::text;
RESET ROLE;

-- The warnings, one case per standby: no agent, an unreachable agent, an agent of another
-- cluster, a standby that cannot be rewound and lacks pg_rewind, a standby agent whose standby
-- does not stream, an unknown agent list, two standbys under one name, and one without trouble.
SELECT w.warning || E'\n  HINT: ' || w.hint FROM safe_upgrade._standby_warnings('[
  {"name": "plain", "state": "streaming", "rewindable": true, "has_agent": false, "agent": null},
  {"name": "down", "state": "streaming", "rewindable": true, "has_agent": true,
   "agent": {"name": "down", "agent": "unix:/run/down/agent.sock", "reachable": false, "error": "connection refused"}},
  {"name": "alien", "state": "streaming", "rewindable": true, "has_agent": true,
   "agent": {"name": "alien", "agent": "alien:7433", "reachable": true, "system_identifier_matches": false}},
  {"name": "slow", "state": "streaming", "rewindable": false, "has_agent": true,
   "agent": {"name": "slow", "agent": "unix:/run/slow/agent.sock", "reachable": true,
             "system_identifier_matches": true, "pg_rewind": false}},
  {"name": "gone", "state": "not_streaming", "rewindable": true, "has_agent": true,
   "agent": {"name": "gone", "agent": "unix:/run/gone/agent.sock", "reachable": true,
             "system_identifier_matches": true, "pg_rewind": true}},
  {"name": "unknown", "state": "streaming", "rewindable": true, "has_agent": null, "agent": null},
  {"name": "walreceiver", "state": "streaming", "rewindable": true, "has_agent": false, "agent": null},
  {"name": "walreceiver", "state": "catchup", "rewindable": true, "has_agent": false, "agent": null},
  {"name": "fine", "state": "streaming", "rewindable": true, "has_agent": true,
   "agent": {"name": "fine", "agent": "unix:/run/fine/agent.sock", "reachable": true,
             "system_identifier_matches": true, "pg_rewind": true}}
]'::jsonb) w;

-- upgrade_standbys: the outcomes the agent may record, and nothing else; rows go with their upgrade.
INSERT INTO safe_upgrade.upgrades (id, extname, from_version, to_version, state) VALUES
  (301, 'ext_standbys', '1.0', '2.0', 'rolled_back');
SELECT try_sql(format($$INSERT INTO safe_upgrade.upgrade_standbys (upgrade_id, name, outcome) VALUES (301, %L, %L)$$,
                      'standby_' || o, o))
  FROM unnest(ARRAY['pending', 'streaming', 'rewound', 'recloned', 'failed', 'unreachable', 'no_agent', 'bogus']) o;
SELECT try_sql($$INSERT INTO safe_upgrade.upgrade_standbys (upgrade_id, name) VALUES (301, 'standby_pending')$$);
SELECT try_sql($$INSERT INTO safe_upgrade.upgrade_standbys (upgrade_id, name) VALUES (999, 'orphan')$$);
SELECT name || ' ' || outcome || ' detail=' || detail::text || ' has_agent=' || coalesce(has_agent::text, 'null')
  FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = 301 ORDER BY name;
-- status() lists them by name, without the upgrade id.
SELECT s ->> 'name' || ' ' || (s ->> 'outcome') || ' upgrade_id_key=' || (s ? 'upgrade_id')
  FROM jsonb_array_elements(safe_upgrade.status(301) -> 'standbys') s;
DELETE FROM safe_upgrade.upgrades WHERE id = 301;
SELECT 'left after the upgrade went=' || count(*) FROM safe_upgrade.upgrade_standbys WHERE upgrade_id = 301;
