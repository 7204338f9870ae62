-- The C++/PostgreSQL boundary: an ERROR that PostgreSQL raises inside a guarded call from C++
-- (here the SPI query of _database_inventory(), blocked by a lock that another session holds)
-- reaches the caller with its own SQLSTATE and message, and the session stays usable: the same
-- error twice in a row, a top-level error, then the same call succeeding.
CREATE EXTENSION dblink;
SELECT dblink_connect('locker', 'dbname=' || current_database());
SELECT dblink_exec('locker', 'BEGIN');
SELECT dblink_exec('locker', 'LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE');
SET lock_timeout = '200ms';
SELECT try_sql($$SELECT safe_upgrade._database_inventory(current_database(), 'hstore', NULL)$$);
SELECT try_sql($$SELECT safe_upgrade._database_inventory(current_database(), 'hstore', '1.8')$$);
\set VERBOSITY sqlstate
SELECT safe_upgrade._database_inventory(current_database(), 'hstore', NULL);
\set VERBOSITY default
SELECT 'still usable: ' || 1;
RESET lock_timeout;
SELECT dblink_exec('locker', 'ROLLBACK');
SELECT dblink_disconnect('locker');
SELECT safe_upgrade._database_inventory(current_database(), 'hstore', '1.8') ->> 'installed_version' AS installed,
       safe_upgrade._database_inventory(current_database(), 'hstore', '1.8') -> 'update_path' AS update_path;
DROP EXTENSION dblink;
