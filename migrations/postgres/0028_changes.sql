-- Change capture (ADR 28): what each batch did to a namespace's KV keys and
-- table rows, for GET /projections/{name}/changes.
--
-- Statement-level triggers (with transition tables: one INSERT per
-- statement, whatever its rows) note each key a statement touches in the
-- namespace's _reel_touched, keeping the first note of the batch (inserted
-- or existing). Before the checkpoint moves, reel.capture_commit writes
-- what the batch left of each key into _reel_changes, rendered as reel's
-- table reads render rows, stamped with the batch's cursor, and forgets the
-- keys: all in the batch's transaction. The capture functions run with the
-- namespace role's rights (SECURITY INVOKER) on its own schema: the role
-- owns its tables and so may put triggers on them; reel's user puts them
-- on _reel_kv.

-- The tables of capture in p_schema, owned by reel's user, usable by the
-- role; with p_on the KV table watched, without it every capture trigger
-- of the schema dropped.
CREATE OR REPLACE FUNCTION reel.capture_setup(p_schema TEXT, p_role TEXT, p_on BOOLEAN)
RETURNS VOID LANGUAGE plpgsql SET search_path = pg_catalog, reel AS $$
DECLARE
    v_trigger RECORD;
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %1$I._reel_changes (seq BIGSERIAL PRIMARY KEY, tx BIGINT NOT NULL, '
        '"position" BIGINT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL, tbl TEXT, key TEXT NOT NULL, '
        '"row" TEXT, value BYTEA); '
        'CREATE INDEX IF NOT EXISTS _reel_changes_at ON %1$I._reel_changes (at); '
        'CREATE TABLE IF NOT EXISTS %1$I._reel_changes_pruned (id INTEGER PRIMARY KEY CHECK (id = 1), '
        'through BIGINT NOT NULL); '
        'CREATE UNLOGGED TABLE IF NOT EXISTS %1$I._reel_touched (seq BIGSERIAL, tbl TEXT NOT NULL, '
        'key JSONB NOT NULL, kind "char" NOT NULL, PRIMARY KEY (tbl, key)); '
        'GRANT SELECT, INSERT, DELETE ON %1$I._reel_changes, %1$I._reel_touched TO %2$I; '
        'GRANT SELECT, INSERT, UPDATE ON %1$I._reel_changes_pruned TO %2$I; '
        'GRANT USAGE ON SEQUENCE %1$I._reel_changes_seq_seq, %1$I._reel_touched_seq_seq TO %2$I',
        p_schema, p_role);
    IF p_on THEN
        PERFORM reel.capture_watch(p_schema, '_reel_kv', ARRAY['key']);
    ELSE
        FOR v_trigger IN
            SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE c.relnamespace = p_schema::regnamespace AND t.tgname LIKE '\_reel\_capture\_%'
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %I.%I', v_trigger.tgname, p_schema, v_trigger.relname);
        END LOOP;
    END IF;
END
$$;

-- Watch p_table (keyed by p_keys): three statement triggers noting the keys
-- its statements touch.
CREATE OR REPLACE FUNCTION reel.capture_watch(p_schema TEXT, p_table TEXT, p_keys TEXT[])
RETURNS VOID LANGUAGE plpgsql SET search_path = pg_catalog, reel AS $$
DECLARE
    v_oid OID := format('%I.%I', p_schema, p_table)::regclass::oid;
    v_new TEXT;
    v_old TEXT;
    v_function TEXT;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = v_oid AND tgname = '_reel_capture_i') THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%L, n.%I', k, k), ', '), string_agg(format('%L, o.%I', k, k), ', ')
      INTO v_new, v_old FROM unnest(p_keys) k;
    FOREACH v_function IN ARRAY ARRAY['i', 'u', 'd'] LOOP
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %1$I.%2$I() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN '
            'INSERT INTO %1$I._reel_touched (tbl, key, kind) %3$s ON CONFLICT DO NOTHING; RETURN NULL; END $f$',
            p_schema, '_reel_touch_' || v_oid || '_' || v_function,
            CASE v_function
                WHEN 'i' THEN format('SELECT %L, jsonb_build_object(%s), %L FROM _reel_new n', p_table, v_new, 'i')
                WHEN 'u' THEN format('SELECT %L, key, %L FROM (SELECT jsonb_build_object(%s) AS key FROM _reel_old o '
                                     'UNION ALL SELECT jsonb_build_object(%s) FROM _reel_new n) k',
                                     p_table, 'u', v_old, v_new)
                ELSE format('SELECT %L, jsonb_build_object(%s), %L FROM _reel_old o', p_table, v_old, 'u')
            END);
    END LOOP;
    EXECUTE format(
        'CREATE TRIGGER _reel_capture_i AFTER INSERT ON %1$I.%2$I REFERENCING NEW TABLE AS _reel_new '
        'FOR EACH STATEMENT EXECUTE FUNCTION %1$I.%3$I(); '
        'CREATE TRIGGER _reel_capture_u AFTER UPDATE ON %1$I.%2$I REFERENCING OLD TABLE AS _reel_old '
        'NEW TABLE AS _reel_new FOR EACH STATEMENT EXECUTE FUNCTION %1$I.%4$I(); '
        'CREATE TRIGGER _reel_capture_d AFTER DELETE ON %1$I.%2$I REFERENCING OLD TABLE AS _reel_old '
        'FOR EACH STATEMENT EXECUTE FUNCTION %1$I.%5$I()',
        p_schema, p_table, '_reel_touch_' || v_oid || '_i', '_reel_touch_' || v_oid || '_u',
        '_reel_touch_' || v_oid || '_d');
END
$$;

-- Watch every table of the caller's schema it owns that has a primary key
-- of at most 8 columns and is not watched yet (after a schema change).
CREATE OR REPLACE FUNCTION reel.capture_tables()
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    v_table RECORD;
    v_keys TEXT[];
BEGIN
    FOR v_table IN
        SELECT c.oid, c.relname FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname NOT LIKE '\_reel\_%' AND pg_has_role(c.relowner, 'USAGE')
           AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = '_reel_capture_i')
    LOOP
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) INTO v_keys
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = v_table.oid AND i.indisprimary;
        CONTINUE WHEN v_keys IS NULL OR cardinality(v_keys) > 8;
        PERFORM reel.capture_watch(current_schema(), v_table.relname, v_keys);
    END LOOP;
END
$$;

-- A column's value as reel's table reads render it in JSON (integers for
-- booleans, text for numerics, timestamps and UUIDs, arrays of bytes for
-- bytea; a double always with a fraction, `410.0`, and null for NaN and
-- infinities).
CREATE OR REPLACE FUNCTION reel.capture_json(p_expr TEXT, p_type REGTYPE)
RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
SELECT CASE p_type
    WHEN 'boolean'::regtype THEN format('to_jsonb((%s)::int)', p_expr)
    WHEN 'smallint'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'integer'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'bigint'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'oid'::regtype THEN format('to_jsonb((%s)::bigint)', p_expr)
    WHEN 'text'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'character varying'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'character'::regtype THEN format('to_jsonb(%s)', p_expr)
    WHEN 'real'::regtype THEN format(
        'CASE WHEN (%1$s)::float8 IN (''NaN'', ''Infinity'', ''-Infinity'') THEN ''null''::jsonb '
        'WHEN (%1$s) = trunc(%1$s) THEN to_jsonb(round((%1$s)::numeric, 1)) ELSE to_jsonb((%1$s)::float8) END', p_expr)
    WHEN 'double precision'::regtype THEN format(
        'CASE WHEN (%1$s) IN (''NaN'', ''Infinity'', ''-Infinity'') THEN ''null''::jsonb '
        'WHEN (%1$s) = trunc(%1$s) THEN to_jsonb(round((%1$s)::numeric, 1)) ELSE to_jsonb(%1$s) END', p_expr)
    WHEN 'bytea'::regtype THEN format(
        'CASE WHEN (%1$s) IS NULL THEN NULL ELSE (SELECT coalesce(jsonb_agg(get_byte(%1$s, b) ORDER BY b), ''[]'') '
        'FROM generate_series(0, length(%1$s) - 1) b) END', p_expr)
    WHEN 'timestamp with time zone'::regtype THEN format(
        'CASE WHEN isfinite(%1$s) THEN to_jsonb(to_char((%1$s) AT TIME ZONE ''UTC'', ''YYYY-MM-DD"T"HH24:MI:SS.US"Z"'')) '
        'ELSE to_jsonb((%1$s)::text) END', p_expr)
    WHEN 'timestamp without time zone'::regtype THEN format(
        'CASE WHEN isfinite(%1$s) THEN to_jsonb(to_char(%1$s, ''YYYY-MM-DD"T"HH24:MI:SS.US"Z"'')) '
        'ELSE to_jsonb((%1$s)::text) END', p_expr)
    WHEN 'date'::regtype THEN format('to_jsonb(to_char(%s, ''YYYY-MM-DD''))', p_expr)
    ELSE format('to_jsonb((%s)::text)', p_expr)
END
$$;

-- The JSON object of p_columns (with their types) of row p_alias; past 50
-- columns, jsonb objects of 50 joined (a function takes at most 100
-- arguments), whose keys jsonb orders its own way.
CREATE OR REPLACE FUNCTION reel.capture_object(p_alias TEXT, p_columns TEXT[], p_types REGTYPE[])
RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_parts TEXT[] := ARRAY[]::TEXT[];
    v_pairs TEXT[] := ARRAY[]::TEXT[];
    i INTEGER;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_columns), 0) LOOP
        v_pairs := v_pairs || format('%L, %s', p_columns[i], reel.capture_json(format('%I.%I', p_alias, p_columns[i]), p_types[i]));
        IF cardinality(v_pairs) = 50 THEN
            v_parts := v_parts || format('jsonb_build_object(%s)', array_to_string(v_pairs, ', '));
            v_pairs := ARRAY[]::TEXT[];
        END IF;
    END LOOP;
    IF cardinality(v_parts) = 0 THEN
        -- json, not jsonb: the columns in their order, as table reads give them.
        RETURN format('json_build_object(%s)', array_to_string(v_pairs, ', '));
    END IF;
    IF cardinality(v_pairs) > 0 THEN
        v_parts := v_parts || format('jsonb_build_object(%s)', array_to_string(v_pairs, ', '));
    END IF;
    RETURN '(' || array_to_string(v_parts, ' || ') || ')';
END
$$;

-- The INSERT into _reel_changes of what the batch left of p_table's
-- touched keys ($1 tx, $2 position, $3 at); NULL if it has no primary key.
CREATE OR REPLACE FUNCTION reel.capture_select(p_table TEXT)
RETURNS TEXT LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_oid OID := to_regclass(format('%I.%I', current_schema(), p_table));
    v_columns TEXT[];
    v_types REGTYPE[];
    v_keys TEXT[];
    v_key_types REGTYPE[];
    v_join TEXT;
BEGIN
    IF v_oid IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(attname::text ORDER BY attnum), array_agg(atttypid::regtype ORDER BY attnum)
      INTO v_columns, v_types FROM pg_attribute WHERE attrelid = v_oid AND attnum > 0 AND NOT attisdropped;
    SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)),
           array_agg(a.atttypid::regtype ORDER BY array_position(i.indkey::int2[], a.attnum))
      INTO v_keys, v_key_types
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = v_oid AND i.indisprimary;
    IF v_keys IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(format('t.%1$I = r.%1$I', k), ' AND ') INTO v_join FROM unnest(v_keys) k;
    RETURN format(
        'INSERT INTO _reel_changes (tx, "position", at, kind, tbl, key, "row") '
        'SELECT $1, $2, $3, CASE WHEN t.ctid IS NULL THEN ''delete'' WHEN k.kind = ''i'' THEN ''insert'' ELSE ''update'' END, '
        'k.tbl, %1$s::text, CASE WHEN t.ctid IS NULL THEN NULL ELSE %2$s::text END '
        'FROM _reel_touched k CROSS JOIN LATERAL jsonb_populate_record(NULL::%3$I.%4$I, k.key) r '
        'LEFT JOIN %3$I.%4$I t ON %5$s '
        'WHERE k.tbl = %6$L AND NOT (t.ctid IS NULL AND k.kind = ''i'') ORDER BY k.seq',
        reel.capture_object('r', v_keys, v_key_types), reel.capture_object('t', v_columns, v_types),
        current_schema(), p_table, v_join, p_table);
END
$$;

-- In the batch's transaction, before the checkpoint moves: what the batch
-- left of each key it touched, stamped (p_tx, p_position) at p_at (Unix
-- microseconds); with p_prune_before, changes from before it dropped.
CREATE OR REPLACE FUNCTION reel.capture_commit(p_tx BIGINT, p_position BIGINT, p_at BIGINT, p_prune_before BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    v_table TEXT;
    v_sql TEXT;
    v_through BIGINT;
BEGIN
    FOR v_table IN SELECT DISTINCT tbl FROM _reel_touched LOOP
        IF v_table = '_reel_kv' THEN
            INSERT INTO _reel_changes (tx, "position", at, kind, tbl, key, "row", value)
            SELECT p_tx, p_position, p_at, CASE WHEN v.key IS NULL THEN 'unset' ELSE 'set' END, NULL, k.key->>'key', NULL, v.value
              FROM _reel_touched k LEFT JOIN _reel_kv v ON v.key = k.key->>'key'
             WHERE k.tbl = '_reel_kv' AND NOT (v.key IS NULL AND k.kind = 'i')
             ORDER BY k.seq;
        ELSE
            v_sql := reel.capture_select(v_table);
            IF v_sql IS NOT NULL THEN
                EXECUTE v_sql USING p_tx, p_position, p_at;
            END IF;
        END IF;
    END LOOP;
    DELETE FROM _reel_touched;
    IF p_prune_before IS NOT NULL THEN
        SELECT max(seq) INTO v_through FROM _reel_changes WHERE at < p_prune_before;
        IF v_through IS NOT NULL THEN
            DELETE FROM _reel_changes WHERE seq <= v_through;
            INSERT INTO _reel_changes_pruned (id, through) VALUES (1, v_through)
                ON CONFLICT (id) DO UPDATE SET through = greatest(_reel_changes_pruned.through, excluded.through);
        END IF;
    END IF;
END
$$;
