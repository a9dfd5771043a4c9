-- reel.emit set-based (issue 22, ADR 47): a reactor batch's emissions are
-- appended by two statements, whatever their number, instead of a PL/pgSQL
-- loop running three or four statements per emission (docs/benchmarks.md).
-- The guarantees are those of 0022 (ADR 23):
--   - only a reactor namespace's own role, once per transaction (RL403),
--     every stream under the declared prefix;
--   - an emission of another namespace for a cause the reactor has handled
--     (reel.reactor_handled) is dropped, as is one whose key (reactor, cause,
--     index) is in reel.emitted; both are counted as dropped;
--   - each stream's versions follow on from its last, in emission order,
--     positions in the same order; a concurrent writer holding one of those
--     versions is waited for, and if it commits the whole append is undone
--     (a subtransaction) and tried again from the stream's new last version.
-- Timers are unchanged.

CREATE OR REPLACE FUNCTION reel.emit(p_namespace TEXT, p_events JSONB, p_timers JSONB)
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
    n_given INTEGER := jsonb_array_length(p_events);
    n_emitted INTEGER := 0;
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
    SELECT x.e->>'stream_id' INTO v_stream FROM jsonb_array_elements(p_events) AS x(e)
     WHERE NOT coalesce(starts_with(x.e->>'stream_id', v_prefix), false) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'emit to stream % refused: reactor % declared the stream prefix %',
            v_stream, v_reactor, v_prefix USING ERRCODE = '42501';
    END IF;
    FOR attempt IN 1..100 LOOP
        -- Nothing to append (a batch replaying what another namespace or an
        -- earlier attempt emitted): no insert, so no wake-up for the readers.
        -- Otherwise this stops at the first emission to append.
        IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_events) AS x(e)
                        WHERE (h.namespace = p_namespace
                               OR ((x.e->>'cause_tx')::bigint, (x.e->>'cause')::bigint) > (h.tx, h.position))
                          AND NOT EXISTS (SELECT 1 FROM reel.emitted k
                                           WHERE k.reactor = v_reactor AND k.cause = (x.e->>'cause')::bigint
                                             AND k.idx = (x.e->>'index')::integer)) THEN
            n_emitted := 0;
            EXIT;
        END IF;
        -- One statement, no joins (the planner cannot count a JSON array's
        -- elements, and a nested loop over two would be quadratic): the
        -- emissions neither handled by another namespace nor keyed in
        -- reel.emitted (an index probe each); each stream's last version read
        -- once, at its first emission, and spread over its others by a
        -- window; positions drawn in emission order (volatile functions run
        -- after ORDER BY), so that both inserts know them.
        BEGIN
            WITH fresh AS (
                SELECT x.ord, x.e->>'stream_id' AS stream_id, x.e,
                       row_number() OVER (PARTITION BY x.e->>'stream_id' ORDER BY x.ord) AS nth
                  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, ord)
                 WHERE (h.namespace = p_namespace
                        OR ((x.e->>'cause_tx')::bigint, (x.e->>'cause')::bigint) > (h.tx, h.position))
                   AND NOT EXISTS (SELECT 1 FROM reel.emitted k
                                    WHERE k.reactor = v_reactor AND k.cause = (x.e->>'cause')::bigint
                                      AND k.idx = (x.e->>'index')::integer)
            ), based AS (
                SELECT f.*, CASE WHEN f.nth = 1 THEN
                           coalesce((SELECT max(v.version) FROM public.events v WHERE v.stream_id = f.stream_id), 0)
                       END AS at_version
                  FROM fresh f
            ), numbered AS (
                SELECT b.ord, b.stream_id, b.e, max(b.at_version) OVER (PARTITION BY b.stream_id) + b.nth AS new_version
                  FROM based b
            ), positioned AS (
                SELECT nb.ord, nb.stream_id, nb.e, nb.new_version, nextval(v_ids) AS id
                  FROM numbered nb ORDER BY nb.ord
            ), appended AS (
                INSERT INTO public.events (id, stream_id, version, event_type, data, metadata) OVERRIDING SYSTEM VALUE
                SELECT p.id, p.stream_id, p.new_version, p.e->>'event_type', p.e->'data', p.e->'metadata'
                  FROM positioned p
            ), keyed AS (
                INSERT INTO reel.emitted (reactor, cause, idx, namespace, position)
                SELECT v_reactor, (p.e->>'cause')::bigint, (p.e->>'index')::integer, p_namespace, p.id
                  FROM positioned p
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

REVOKE ALL ON FUNCTION reel.emit(TEXT, JSONB, JSONB) FROM PUBLIC;
