-- reel.emit takes the batch's emissions as column arrays (ADR 47): each
-- field is read from its array, and only an emission's data and metadata are
-- parsed as JSON (once, into the events row), instead of the whole batch as
-- one JSON array whose elements are taken apart field by field.
-- It also skips the probe of reel.emitted per emission, and the sorts, when
-- the calling namespace is the one furthest in the log (reel.reactor_handled)
-- and every cause is past where it has handled: a key for such a cause can
-- then only be there through an error of reel's, and the table's primary key
-- still refuses it: the append is undone (a subtransaction) and tried again
-- with the probes. Otherwise the
-- guarantees are those of 0029 (ADR 23). The JSON signature is dropped: reel
-- calls only this one, and a reactor role is granted only this one.

DROP FUNCTION IF EXISTS reel.emit(TEXT, JSONB, JSONB);

CREATE OR REPLACE FUNCTION reel.emit(p_namespace TEXT, p_causes BIGINT[], p_cause_txs BIGINT[], p_indexes INTEGER[],
    p_nths INTEGER[], p_streams TEXT[], p_types TEXT[], p_data TEXT[], p_metadata TEXT[], p_timers JSONB)
RETURNS TABLE (emitted INTEGER, dropped INTEGER)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel
-- The batch's emissions are sorted twice (per stream, then in emission
-- order): in memory, not spilled to disk, up to the batch limit's 64 MiB.
SET work_mem = '128MB' AS $$
DECLARE
    v_reactor TEXT;
    v_prefix TEXT;
    v_stream TEXT;
    v_ids REGCLASS := pg_get_serial_sequence('public.events', 'id')::regclass;
    h reel.reactor_handled%ROWTYPE;
    t JSONB;
    n_given INTEGER := coalesce(cardinality(p_causes), 0);
    n_emitted INTEGER := 0;
    -- Whether to look each emission's key up in reel.emitted first.
    v_probe BOOLEAN;
BEGIN
    SELECT name, emit_prefix INTO v_reactor, v_prefix FROM reel.namespaces
     WHERE namespace = p_namespace AND role_name = session_user;
    IF v_reactor IS NULL THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    IF v_prefix IS NULL OR v_prefix = '' THEN
        RAISE EXCEPTION 'namespace % is not a reactor''s: it may not emit', p_namespace USING ERRCODE = '42501';
    END IF;
    UPDATE reel.checkpoints SET emitted_in = pg_current_xact_id()
     WHERE namespace = p_namespace AND emitted_in IS DISTINCT FROM pg_current_xact_id();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reel.emit was called twice in one transaction of %: only reel may call it, once per batch',
            p_namespace USING ERRCODE = 'RL403';
    END IF;
    INSERT INTO reel.reactor_handled VALUES (v_reactor, p_namespace, 0, 0) ON CONFLICT DO NOTHING;
    -- Serialises the reactor's namespaces (old and new version) per batch.
    SELECT * INTO h FROM reel.reactor_handled WHERE reactor = v_reactor FOR UPDATE;
    IF coalesce(cardinality(p_cause_txs), 0) <> n_given OR coalesce(cardinality(p_indexes), 0) <> n_given
       OR coalesce(cardinality(p_nths), 0) <> n_given
       OR coalesce(cardinality(p_streams), 0) <> n_given OR coalesce(cardinality(p_types), 0) <> n_given
       OR coalesce(cardinality(p_data), 0) <> n_given OR coalesce(cardinality(p_metadata), 0) <> n_given THEN
        RAISE EXCEPTION 'reel.emit: the emissions'' arrays differ in length' USING ERRCODE = '22023';
    END IF;
    SELECT s INTO v_stream FROM unnest(p_streams) AS s WHERE NOT coalesce(starts_with(s, v_prefix), false) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'emit to stream % refused: reactor % declared the stream prefix %',
            v_stream, v_reactor, v_prefix USING ERRCODE = '42501';
    END IF;
    -- Causes past where the reactor's furthest namespace has handled, of
    -- that namespace: no key of theirs can be in reel.emitted (a key is
    -- written with its cause's batch, which moves the furthest position past
    -- it), so the first attempt does not look; the primary key would refuse
    -- one anyway. Any other call looks (another namespace, a dead letter
    -- retried, a checkpoint moved back).
    v_probe := h.namespace IS DISTINCT FROM p_namespace
        OR EXISTS (SELECT 1 FROM unnest(p_cause_txs, p_causes) AS x(cause_tx, cause)
                    WHERE (x.cause_tx, x.cause) <= (h.tx, h.position));
    FOR attempt IN 1..100 LOOP
        -- Nothing to append (no emissions, or a batch replaying what
        -- another namespace or an earlier attempt emitted): no insert, so no
        -- wake-up for the readers. Not looking, every emission is appended:
        -- there is nothing to ask.
        IF n_given = 0 OR (v_probe AND NOT EXISTS (
               SELECT 1 FROM unnest(p_causes, p_cause_txs, p_indexes) AS x(cause, cause_tx, idx)
                WHERE (h.namespace = p_namespace OR (x.cause_tx, x.cause) > (h.tx, h.position))
                  AND NOT EXISTS (SELECT 1 FROM reel.emitted k
                                   WHERE k.reactor = v_reactor AND k.cause = x.cause AND k.idx = x.idx))) THEN
            n_emitted := 0;
            EXIT;
        END IF;
        -- Not looking, nothing is dropped: every emission is appended, at
        -- its stream's last version plus its rank among the batch's
        -- emissions to that stream (p_nths, 1 first, counted by reel), so
        -- that neither the ranks nor the order need sorting here. Every
        -- probe of a stream's last version reads the same snapshot, before
        -- the insert.
        IF NOT v_probe THEN
            BEGIN
                WITH positioned AS (
                    SELECT x.cause, x.idx, x.stream_id, x.event_type, x.data, x.metadata,
                           coalesce((SELECT max(v.version) FROM public.events v WHERE v.stream_id = x.stream_id), 0)
                               + x.nth AS new_version,
                           nextval(v_ids) AS id
                      FROM unnest(p_causes, p_indexes, p_nths, p_streams, p_types, p_data, p_metadata)
                           WITH ORDINALITY AS x(cause, idx, nth, stream_id, event_type, data, metadata, ord)
                     ORDER BY x.ord
                ), appended AS (
                    INSERT INTO public.events (id, stream_id, version, event_type, data, metadata)
                    OVERRIDING SYSTEM VALUE
                    SELECT p.id, p.stream_id, p.new_version, p.event_type, p.data::jsonb, p.metadata::jsonb
                      FROM positioned p
                ), keyed AS (
                    INSERT INTO reel.emitted (reactor, cause, idx, namespace, position)
                    SELECT v_reactor, p.cause, p.idx, p_namespace, p.id FROM positioned p
                    RETURNING 1
                )
                SELECT count(*) INTO n_emitted FROM keyed;
                EXIT;
            EXCEPTION WHEN unique_violation THEN
                -- A version an outside writer committed meanwhile, or a key
                -- there after all: the next attempts look, and read what it
                -- left.
                v_probe := true;
                CONTINUE;
            END;
        END IF;
        -- Looking: one statement, no joins (the planner cannot count an
        -- array's elements, and a nested loop over two would be quadratic):
        -- the emissions neither handled by another namespace nor keyed in
        -- reel.emitted (an index probe each); each stream's
        -- last version read once, at its first emission, and spread over its
        -- others by a window; positions drawn in emission order (volatile
        -- functions run after ORDER BY), so that both inserts know them.
        -- Only the data and metadata are parsed as JSON, into the row.
        BEGIN
            WITH given AS (
                SELECT * FROM unnest(p_causes, p_cause_txs, p_indexes, p_streams, p_types, p_data, p_metadata)
                    WITH ORDINALITY AS x(cause, cause_tx, idx, stream_id, event_type, data, metadata, ord)
            ), fresh AS (
                SELECT g.*, row_number() OVER (PARTITION BY g.stream_id ORDER BY g.ord) AS nth
                  FROM given g
                 WHERE (h.namespace = p_namespace OR (g.cause_tx, g.cause) > (h.tx, h.position))
                   AND NOT EXISTS (SELECT 1 FROM reel.emitted k
                                    WHERE k.reactor = v_reactor AND k.cause = g.cause AND k.idx = g.idx)
            ), based AS (
                SELECT f.*, CASE WHEN f.nth = 1 THEN
                           coalesce((SELECT max(v.version) FROM public.events v WHERE v.stream_id = f.stream_id), 0)
                       END AS at_version
                  FROM fresh f
            ), numbered AS (
                -- Not b.*: the planner would copy the subquery above into
                -- each use of at_version, and run it twice.
                SELECT b.ord, b.cause, b.idx, b.stream_id, b.event_type, b.data, b.metadata,
                       max(b.at_version) OVER (PARTITION BY b.stream_id) + b.nth AS new_version
                  FROM based b
            ), positioned AS (
                SELECT nb.*, nextval(v_ids) AS id FROM numbered nb ORDER BY nb.ord
            ), appended AS (
                INSERT INTO public.events (id, stream_id, version, event_type, data, metadata) OVERRIDING SYSTEM VALUE
                SELECT p.id, p.stream_id, p.new_version, p.event_type, p.data::jsonb, p.metadata::jsonb
                  FROM positioned p
            ), keyed AS (
                INSERT INTO reel.emitted (reactor, cause, idx, namespace, position)
                SELECT v_reactor, p.cause, p.idx, p_namespace, p.id FROM positioned p
                RETURNING 1
            )
            SELECT count(*) INTO n_emitted FROM keyed;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- A writer outside reel committed one of the versions (or, in a
            -- race, one of the keys): the next attempt reads what it left.
            IF attempt = 100 THEN
                RAISE EXCEPTION 'reactor %''s streams kept changing under 100 appends in a row', v_reactor
                    USING ERRCODE = '40001';
            END IF;
        END;
    END LOOP;
    FOR t IN SELECT * FROM jsonb_array_elements(p_timers) LOOP
        IF t ? 'cancel' THEN
            DELETE FROM reel.timers WHERE reactor = v_reactor AND key = t->>'key';
        ELSIF NOT starts_with(t->'event'->>'stream_id', v_prefix) THEN
            RAISE EXCEPTION 'timer to stream % refused: reactor % declared the stream prefix %',
                t->'event'->>'stream_id', v_reactor, v_prefix USING ERRCODE = '42501';
        ELSIF h.namespace = p_namespace
              OR ((t->'event'->>'cause_tx')::bigint, (t->'event'->>'cause')::bigint) > (h.tx, h.position) THEN
            INSERT INTO reel.timers VALUES (v_reactor, t->>'key', (t->>'due_micros')::bigint,
                (t->'event'->>'cause')::bigint, (t->'event'->>'index')::integer, t->'event')
            ON CONFLICT (reactor, key) DO UPDATE SET due_micros = excluded.due_micros, cause = excluded.cause,
                idx = excluded.idx, event = excluded.event;
        END IF;
    END LOOP;
    INSERT INTO reel.reactor_counts VALUES (p_namespace, n_emitted, n_given - n_emitted)
    ON CONFLICT (namespace) DO UPDATE SET emitted = reel.reactor_counts.emitted + excluded.emitted,
        dropped = reel.reactor_counts.dropped + excluded.dropped;
    RETURN QUERY SELECT n_emitted, n_given - n_emitted;
END
$$;


REVOKE ALL ON FUNCTION reel.emit(TEXT, BIGINT[], BIGINT[], INTEGER[], INTEGER[], TEXT[], TEXT[], TEXT[], TEXT[], JSONB) FROM PUBLIC;

-- The reactors' roles of namespaces created before: granted the new
-- signature, as reel grants it to a new one (ADR 23).
DO $$
DECLARE r RECORD;
BEGIN
    FOR r IN SELECT role_name FROM reel.namespaces WHERE emit_prefix IS NOT NULL AND emit_prefix <> '' LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.role_name) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION reel.emit(TEXT, BIGINT[], BIGINT[], INTEGER[], INTEGER[], TEXT[], TEXT[], TEXT[], TEXT[], JSONB) TO %I',
                r.role_name);
        END IF;
    END LOOP;
END
$$;
