-- The documented steps per extension that plan() shows (_extension_notes): each has a source, an
-- extension without notes has none, and a name that is not an extension's finds nothing.
\pset format unaligned
\pset tuples_only on
SELECT n ->> 'extension', n ->> 'source' LIKE 'https://%', (n ->> 'handled') IS NOT NULL
  FROM jsonb_array_elements(safe_upgrade._extension_notes('timescaledb')) n;
SELECT jsonb_array_length(safe_upgrade._extension_notes('postgis'));
SELECT safe_upgrade._extension_notes('hstore');
SELECT safe_upgrade._extension_notes($$x'); DROP TABLE safe_upgrade.upgrades; --$$);
SELECT count(*) FROM safe_upgrade.upgrades WHERE false;
