-- The catalog's shape: the tables and the columns DESIGN.md makes part of the contract, the
-- functions, and who may execute them.
\pset format unaligned
\pset tuples_only on

SELECT table_name || ': ' || string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
  FROM information_schema.columns WHERE table_schema = 'safe_upgrade'
 GROUP BY table_name ORDER BY table_name;

SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'safe_upgrade_operator';

-- Every function: SECURITY DEFINER or not, its pinned search_path, and whether PUBLIC and the
-- operator role may execute it.
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
       || CASE WHEN p.prosecdef THEN ' SECURITY DEFINER' ELSE '' END
       || ' ' || coalesce(array_to_string(p.proconfig, ','), 'no search_path')
       || ' public=' || has_function_privilege('regress_su_nobody', p.oid, 'EXECUTE')
       || ' operator=' || has_function_privilege('regress_su_op', p.oid, 'EXECUTE')
  FROM pg_proc p WHERE p.pronamespace = 'safe_upgrade'::regnamespace
 ORDER BY p.proname;

-- Tables: PUBLIC reads, nobody but superusers writes.
SELECT c.relname
       || ' select=' || has_table_privilege('regress_su_nobody', c.oid, 'SELECT')
       || ' operator_write=' || (has_table_privilege('regress_su_op', c.oid, 'INSERT')
                                 OR has_table_privilege('regress_su_op', c.oid, 'UPDATE')
                                 OR has_table_privilege('regress_su_op', c.oid, 'DELETE')
                                 OR has_table_privilege('regress_su_op', c.oid, 'TRUNCATE'))
  FROM pg_class c WHERE c.relnamespace = 'safe_upgrade'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname;
SELECT c.relname || ' usage=' || has_sequence_privilege('regress_su_op', c.oid, 'USAGE')
  FROM pg_class c WHERE c.relnamespace = 'safe_upgrade'::regnamespace AND c.relkind = 'S'
 ORDER BY c.relname;

-- The partial unique index that keeps one upgrade in flight per extension.
SELECT pg_get_indexdef('safe_upgrade.upgrades_one_in_flight'::regclass);
