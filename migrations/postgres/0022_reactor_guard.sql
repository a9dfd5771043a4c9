-- Reactors guarded and their timers fired (issue 22, ADRs 23 and 24).
--
-- reel.emit is granted only to reactor namespaces' roles (the grant is made
-- when reel opens a reactor's namespace, with its declared prefix recorded
-- here), checks that prefix itself, and like reel.advance runs at most once
-- per transaction: the host calls each once per batch, so a module's own SQL
-- that calls either (from a function of its own, past the text checks) makes
-- the host's call fail and its batch roll back. The handled cursor moves in
-- reel.advance, to the checkpoint it sets: it cannot be forged apart from it.

ALTER TABLE reel.namespaces ADD COLUMN IF NOT EXISTS emit_prefix TEXT;
ALTER TABLE reel.checkpoints ADD COLUMN IF NOT EXISTS emitted_in xid8;
ALTER TABLE reel.checkpoints ADD COLUMN IF NOT EXISTS advanced_in xid8;
CREATE INDEX IF NOT EXISTS timers_due_idx ON reel.timers (reactor, due_micros);

-- The old signature took the handled cursor from its caller.
DROP FUNCTION IF EXISTS reel.emit(TEXT, BIGINT, BIGINT, JSONB, JSONB);

-- Append one event at the stream's next version. A concurrent append to the
-- same stream (an outside writer) shows as a conflict on (stream_id,
-- version): the insert does nothing and the next try reads the new last
-- version (each statement of a volatile function sees the latest commits).
CREATE OR REPLACE FUNCTION reel.append_event(p_stream TEXT, p_type TEXT, p_data JSONB, p_metadata JSONB)
RETURNS BIGINT LANGUAGE plpgsql SET search_path = pg_catalog, reel AS $$
DECLARE
    v_version INTEGER;
    v_position BIGINT;
BEGIN
    FOR attempt IN 1..100 LOOP
        SELECT coalesce(max(version), 0) + 1 INTO v_version FROM public.events WHERE stream_id = p_stream;
        INSERT INTO public.events (stream_id, version, event_type, data, metadata)
        VALUES (p_stream, v_version, p_type, p_data, p_metadata)
        ON CONFLICT DO NOTHING
        RETURNING id INTO v_position;
        IF v_position IS NOT NULL THEN
            RETURN v_position;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'stream % kept changing under 100 appends in a row', p_stream USING ERRCODE = '40001';
END
$$;

-- A reactor batch's emissions and timer changes, in its transaction, before
-- reel.advance. p_events: [{cause, cause_tx, index, stream_id, event_type,
-- data, metadata}]; p_timers: [{key, due_micros, event} | {key, cancel: true}].
CREATE OR REPLACE FUNCTION reel.emit(p_namespace TEXT, p_events JSONB, p_timers JSONB)
RETURNS TABLE (emitted INTEGER, dropped INTEGER)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
DECLARE
    v_reactor TEXT;
    v_prefix TEXT;
    h reel.reactor_handled%ROWTYPE;
    e JSONB;
    t JSONB;
    v_position BIGINT;
    n_emitted INTEGER := 0;
    n_dropped INTEGER := 0;
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
    FOR e IN SELECT * FROM jsonb_array_elements(p_events) LOOP
        IF NOT starts_with(e->>'stream_id', v_prefix) THEN
            RAISE EXCEPTION 'emit to stream % refused: reactor % declared the stream prefix %',
                e->>'stream_id', v_reactor, v_prefix USING ERRCODE = '42501';
        END IF;
        IF h.namespace <> p_namespace
           AND ((e->>'cause_tx')::bigint, (e->>'cause')::bigint) <= (h.tx, h.position) THEN
            n_dropped := n_dropped + 1;
            CONTINUE;
        END IF;
        PERFORM 1 FROM reel.emitted WHERE reactor = v_reactor AND cause = (e->>'cause')::bigint
                                      AND idx = (e->>'index')::integer;
        IF FOUND THEN
            n_dropped := n_dropped + 1;
            CONTINUE;
        END IF;
        v_position := reel.append_event(e->>'stream_id', e->>'event_type', e->'data', e->'metadata');
        INSERT INTO reel.emitted VALUES (v_reactor, (e->>'cause')::bigint, (e->>'index')::integer, p_namespace, v_position);
        n_emitted := n_emitted + 1;
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
    INSERT INTO reel.reactor_counts VALUES (p_namespace, n_emitted, n_dropped)
    ON CONFLICT (namespace) DO UPDATE SET emitted = reel.reactor_counts.emitted + excluded.emitted,
        dropped = reel.reactor_counts.dropped + excluded.dropped;
    RETURN QUERY SELECT n_emitted, n_dropped;
END
$$;

-- Compare-and-set: moves the checkpoint only from where the caller last left
-- it, once per transaction; a reactor's handled cursor moves with it.
CREATE OR REPLACE FUNCTION reel.advance(p_namespace TEXT, p_from_tx BIGINT, p_from_position BIGINT, p_to_tx BIGINT, p_to_position BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
DECLARE
    v_name TEXT;
    v_prefix TEXT;
    v_advanced_in xid8;
BEGIN
    SELECT name, emit_prefix INTO v_name, v_prefix FROM reel.namespaces
     WHERE namespace = p_namespace AND role_name = session_user;
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    UPDATE reel.checkpoints
       SET tx = p_to_tx, position = p_to_position, initialized = true, updated_at = now(),
           advanced_in = pg_current_xact_id()
     WHERE namespace = p_namespace AND tx = p_from_tx AND position = p_from_position
       AND advanced_in IS DISTINCT FROM pg_current_xact_id();
    IF NOT FOUND THEN
        SELECT advanced_in INTO v_advanced_in FROM reel.checkpoints WHERE namespace = p_namespace;
        IF v_advanced_in = pg_current_xact_id() THEN
            RAISE EXCEPTION 'reel.advance was called twice in one transaction of %: only reel may call it, once per batch',
                p_namespace USING ERRCODE = 'RL403';
        END IF;
        -- Aborts the batch's transaction: a fenced batch commits nothing.
        RAISE EXCEPTION 'the checkpoint of % is no longer at (%, %): another runtime moved it',
            p_namespace, p_from_tx, p_from_position USING ERRCODE = 'RL409';
    END IF;
    IF v_prefix IS NOT NULL THEN
        UPDATE reel.reactor_handled SET namespace = p_namespace, tx = p_to_tx, position = p_to_position
         WHERE reactor = v_name AND (p_to_tx, p_to_position) > (tx, position);
    END IF;
    RETURN true;
END
$$;

-- Fire reactor p_reactor's timers due at p_now (Unix microseconds): each is
-- deleted and its event appended in this transaction, keyed like an emission
-- (reactor, cause, index), so a timer fires once however many reel processes
-- try at the same time. Called by reel's user only. Returns what fired, what
-- is still pending and when the next one is due.
CREATE OR REPLACE FUNCTION reel.fire_timers(p_reactor TEXT, p_now BIGINT)
RETURNS TABLE (fired INTEGER, pending INTEGER, next_due BIGINT)
LANGUAGE plpgsql SET search_path = pg_catalog, reel AS $$
DECLARE
    t reel.timers%ROWTYPE;
    v_position BIGINT;
    n_fired INTEGER := 0;
BEGIN
    FOR t IN DELETE FROM reel.timers WHERE reactor = p_reactor AND due_micros <= p_now RETURNING * LOOP
        INSERT INTO reel.emitted VALUES (p_reactor, t.cause, t.idx, 'timer', 0) ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        v_position := reel.append_event(t.event->>'stream_id', t.event->>'event_type', t.event->'data',
            coalesce(t.event->'metadata', '{}'::jsonb) || jsonb_build_object('timer', t.key));
        UPDATE reel.emitted SET position = v_position WHERE reactor = p_reactor AND cause = t.cause AND idx = t.idx;
        n_fired := n_fired + 1;
    END LOOP;
    RETURN QUERY SELECT n_fired, count(*)::integer, min(due_micros) FROM reel.timers WHERE reactor = p_reactor;
END
$$;

REVOKE ALL ON FUNCTION reel.append_event(TEXT, TEXT, JSONB, JSONB) FROM PUBLIC;
REVOKE ALL ON FUNCTION reel.emit(TEXT, JSONB, JSONB) FROM PUBLIC;
REVOKE ALL ON FUNCTION reel.fire_timers(TEXT, BIGINT) FROM PUBLIC;
