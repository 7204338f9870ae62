-- safe_upgrade--0.1.sql, part 12: who may execute the functions that change upgrades.
-- (extension/Makefile concatenates sql/safe_upgrade--0.1/*.sql in order into the install script.)

-- Privileges. Reading is public (the catalog tables, plan, status, wait, agent_status); changing
-- is for superusers and safe_upgrade_operator, and only through these functions, which enforce
-- the state rules. Nobody but superusers can write the tables directly.
REVOKE ALL ON FUNCTION @extschema@.begin(name, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.approve(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.rollback(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_health_check(text, text, name, interval, name) FROM PUBLIC;
-- Read other databases as the bootstrap superuser: only plan() and begin() may, and plan() hides
-- what its caller could not see itself.
REVOKE ALL ON FUNCTION @extschema@._database_inventory(name, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._select_databases(name, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.begin(name, text, jsonb) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.approve(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.cancel(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.rollback(bigint) TO safe_upgrade_operator;
GRANT EXECUTE ON FUNCTION @extschema@.add_health_check(text, text, name, interval, name) TO safe_upgrade_operator;
-- Only the SECURITY DEFINER functions above need it.
REVOKE ALL ON FUNCTION @extschema@._require_operator(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._upgrade_to_change(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._record_request(bigint, text, text, text, jsonb) FROM PUBLIC;
