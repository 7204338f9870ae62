-- safe_upgrade--0.1.sql, part 06 (prediction): what the update scripts on the path drop or
-- alter that your objects use, read from the scripts themselves, in well under a second and
-- before any snapshot. It is advice for plan(): the dry run stays the judge (a script may drop
-- and re-create an object, or drop it in a way these patterns do not see).

-- The objects an update script drops (DROP FUNCTION, OPERATOR, TYPE, CAST, VIEW, ...) or alters in
-- a way their users notice (ALTER TYPE ... DROP or ALTER ATTRIBUTE, RENAME, SET SCHEMA), one row
-- per statement: its verb, kind ('function', 'operator', 'type', ...), the object's name as the
-- script spells it (schema, quotes and @extschema@ removed, lower case), the arguments as written,
-- and the statement (at most 200 characters).
CREATE FUNCTION @extschema@._script_drops(p_script text)
RETURNS TABLE (verb text, kind text, name text, args text, statement text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH body AS (
    -- Comments out, one space for every run of blanks.
    SELECT regexp_replace(regexp_replace(p_script, '--[^\n]*', '', 'g'), '\s+', ' ', 'g') AS text
  ), stmt AS (
    SELECT m[1] AS verb, lower(m[2]) AS kind, m[3] AS target
      FROM body, regexp_matches(body.text,
        '\m(DROP|ALTER)\s+(FUNCTION|PROCEDURE|AGGREGATE|OPERATOR|TYPE|DOMAIN|CAST|VIEW)\s+(?:IF\s+EXISTS\s+)?([^;]+);',
        'gi') AS m
  )
  SELECT upper(s.verb), s.kind,
         -- The object's own name: its first word, after the last dot, quotes removed.
         lower(replace(regexp_replace(split_part(btrim(split_part(split_part(s.target, ',', 1), '(', 1)), ' ', 1),
                              '^.*\.', ''), '"', '')),
         CASE WHEN position('(' IN s.target) > 0
              THEN substring(s.target FROM '\(([^)]*)\)') END,
         left(upper(s.verb) || ' ' || upper(s.kind) || ' ' || btrim(s.target), 200)
    FROM stmt s
   -- Of the ALTERs, only those that take something from a type's users: ADD VALUE, ADD ATTRIBUTE,
   -- SET (...) and OWNER TO keep them working. CREATE OR REPLACE keeps the signature, and what
   -- it changes in behaviour no text can tell: the dry run does.
   WHERE upper(s.verb) = 'DROP'
      OR (s.kind = 'type' AND s.target ~* '\m(DROP\s+ATTRIBUTE|ALTER\s+ATTRIBUTE|RENAME|SET\s+SCHEMA)\M')
$fn$;

-- How many arguments a list such as "int, text" names (0 for an empty one).
CREATE FUNCTION @extschema@._argument_count(p_args text)
RETURNS int LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT CASE WHEN btrim(coalesce(p_args, '')) = '' THEN 0
              ELSE length(p_args) - length(replace(p_args, ',', '')) + 1 END
$fn$;

-- plan()'s prediction: for each database's update path, the hops whose script drops or replaces
-- an object that one of the dependents (plan()'s rows: object_type, object_identity,
-- depends_on_type, depends_on_identity, datname) uses. SECURITY DEFINER to read the scripts in
-- the server's share directory, which only superusers may; it reads nothing else: only the
-- scripts of direct hops that pg_extension_update_paths() lists for an available extension. A
-- script that cannot be read is skipped (the dry run still runs it).
CREATE FUNCTION @extschema@._predicted_breakage(p_extname name, p_databases jsonb, p_dependents jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_dir text := (SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR') || '/extension/';
  v_hop record;
  v_script text;
  v_out jsonb := '[]'::jsonb;
BEGIN
  FOR v_hop IN
    SELECT DISTINCT p.path ->> (i - 1) AS from_version, p.path ->> i AS to_version
      FROM jsonb_array_elements(p_databases) d,
           LATERAL (SELECT d -> 'update_path' AS path) p,
           generate_series(1, coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(d -> 'update_path') = 'array'
                                                               THEN d -> 'update_path' END), 0) - 1) AS i
  LOOP
    BEGIN
      -- Only a script that exists as one hop of the extension's own update paths: the names in the
      -- path come from PostgreSQL (which refuses "/" in versions), never from the arguments alone.
      IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = p_extname)
         OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension_update_paths(p_extname) u
                         WHERE u.source = v_hop.from_version AND u.target = v_hop.to_version
                           AND u.path = v_hop.from_version || '--' || v_hop.to_version) THEN
        CONTINUE;
      END IF;
      v_script := pg_catalog.pg_read_file(v_dir || p_extname || '--' || v_hop.from_version || '--' ||
                                          v_hop.to_version || '.sql');
    EXCEPTION WHEN OTHERS THEN
      CONTINUE;
    END;
    SELECT v_out || coalesce(jsonb_agg(jsonb_build_object(
             'datname', r ->> 'datname',
             'object_type', r ->> 'object_type', 'object_identity', r ->> 'object_identity',
             'uses', r ->> 'depends_on_identity', 'uses_type', r ->> 'depends_on_type',
             'hop', v_hop.from_version || '--' || v_hop.to_version,
             'statement', x.statement,
             'message', format('%s %s uses %s %s, which %s--%s %s', r ->> 'object_type', r ->> 'object_identity',
                               r ->> 'depends_on_type', r ->> 'depends_on_identity', v_hop.from_version,
                               v_hop.to_version,
                               CASE x.verb WHEN 'DROP' THEN 'drops' ELSE 'alters' END))
             ORDER BY r ->> 'datname', r ->> 'object_identity'), '[]'::jsonb)
      INTO v_out
      FROM @extschema@._script_drops(v_script) x, jsonb_array_elements(p_dependents) r
     WHERE (r ->> 'depends_on_type') = CASE x.kind WHEN 'procedure' THEN 'procedure' ELSE x.kind END
       -- The used object's own name, out of its identity (schema.name(args) or schema.name).
       AND lower(replace(regexp_replace(split_part(r ->> 'depends_on_identity', '(', 1), '^.*\.', ''), '"', ''))
           = x.name
       -- Overloads: as many arguments (their spellings differ: int and integer).
       AND (x.args IS NULL OR position('(' IN r ->> 'depends_on_identity') = 0
            OR @extschema@._argument_count(x.args)
               = @extschema@._argument_count(substring(r ->> 'depends_on_identity' FROM '\(([^)]*)\)')))
       -- Only the databases whose path takes this hop.
       AND EXISTS (SELECT 1 FROM jsonb_array_elements(p_databases) d
                    WHERE d ->> 'datname' = r ->> 'datname'
                      AND jsonb_typeof(d -> 'update_path') = 'array'
                      AND (d -> 'update_path') @> jsonb_build_array(v_hop.from_version, v_hop.to_version));
  END LOOP;
  RETURN v_out;
END
$fn$;
