-- What plan()'s prediction reads from an update script (_script_drops): drops of functions,
-- operators, types, casts and views with their names as the script spells them, and only the
-- ALTER TYPEs that take something from a type's users; comments and harmless ALTERs are not drops.
\pset format unaligned
\pset tuples_only on
SELECT verb, kind, name, coalesce(args, '-') FROM safe_upgrade._script_drops($$
  -- DROP FUNCTION commented_out(int);
  DROP FUNCTION IF EXISTS @extschema@."Answer"(int, text);
  DROP   OPERATOR ## (int, int);
  drop view if exists app.v1, v2;
  DROP CAST (int AS text);
  ALTER TYPE t ADD VALUE 'x';
  ALTER TYPE hstore SET ( SUBSCRIPT = hstore_subscript_handler );
  ALTER TYPE t2 DROP ATTRIBUTE a;
  CREATE OR REPLACE FUNCTION kept(int) RETURNS int AS 'select 1' LANGUAGE sql;
$$);
SELECT safe_upgrade._argument_count(''), safe_upgrade._argument_count('int'), safe_upgrade._argument_count('int, text');
-- An extension without scripts to read, or a path of one version, predicts nothing.
SELECT safe_upgrade._predicted_breakage('no_such_extension', '[{"datname": "d", "update_path": ["1.0", "1.1"]}]',
                                        '[{"datname": "d", "depends_on_type": "function", "depends_on_identity": "public.f()"}]');
SELECT safe_upgrade._predicted_breakage('hstore', '[{"datname": "d", "update_path": ["1.8"]}]', '[]');
-- Hostile arguments read no file outside the extension's own update scripts.
SELECT safe_upgrade._predicted_breakage('../../../../etc/passwd', '[{"datname": "d", "update_path": ["a", "b"]}]',
                                        '[{"datname": "d", "depends_on_type": "function", "depends_on_identity": "root"}]');
SELECT safe_upgrade._predicted_breakage('hstore', '[{"datname": "d", "update_path": ["1.4", "/../../../../../tmp/x"]}]',
                                        '[{"datname": "d", "depends_on_type": "function", "depends_on_identity": "x"}]');
