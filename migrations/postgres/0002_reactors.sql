-- Reactors (issue 22, docs/adr/23-reactors-exactly-once.md): what they
-- emitted, keyed by (reactor, cause, index); how far any version of each
-- reactor has handled the log; their pending timers. A reactor's role reaches
-- them only through reel.emit, which appends in the batch's transaction.

CREATE TABLE IF NOT EXISTS reel.emitted (
    reactor   TEXT    NOT NULL,
    cause     BIGINT  NOT NULL,
    idx       INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    position  BIGINT  NOT NULL,
    PRIMARY KEY (reactor, cause, idx)
);

-- The furthest cursor any namespace of the reactor has committed, and which:
-- another namespace's emissions for causes up to it are dropped (history wins).
CREATE TABLE IF NOT EXISTS reel.reactor_handled (
    reactor   TEXT PRIMARY KEY,
    namespace TEXT   NOT NULL,
    tx        BIGINT NOT NULL,
    position  BIGINT NOT NULL
);

-- Per namespace: events emitted, emissions dropped at a cut-over.
CREATE TABLE IF NOT EXISTS reel.reactor_counts (
    namespace TEXT PRIMARY KEY REFERENCES reel.namespaces ON DELETE CASCADE,
    emitted   BIGINT NOT NULL DEFAULT 0,
    dropped   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS reel.timers (
    reactor    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    due_micros BIGINT  NOT NULL,
    cause      BIGINT  NOT NULL,
    idx        INTEGER NOT NULL,
    event      JSONB   NOT NULL,
    PRIMARY KEY (reactor, key)
);

-- A reactor batch's emissions and timer changes, in its transaction, before
-- reel.advance. p_events: [{cause, cause_tx, index, stream_id, event_type,
-- data, metadata}]; p_timers: [{key, due_micros, event} | {key, cancel: true}].
CREATE OR REPLACE FUNCTION reel.emit(p_namespace TEXT, p_to_tx BIGINT, p_to_position BIGINT,
    p_events JSONB, p_timers JSONB)
RETURNS TABLE (emitted INTEGER, dropped INTEGER)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
DECLARE
    v_reactor TEXT;
    h reel.reactor_handled%ROWTYPE;
    e JSONB;
    t JSONB;
    v_version INTEGER;
    v_position BIGINT;
    n_emitted INTEGER := 0;
    n_dropped INTEGER := 0;
BEGIN
    SELECT name INTO v_reactor FROM reel.namespaces WHERE namespace = p_namespace AND role_name = session_user;
    IF v_reactor IS NULL THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    INSERT INTO reel.reactor_handled VALUES (v_reactor, p_namespace, 0, 0) ON CONFLICT DO NOTHING;
    -- Serialises the reactor's namespaces (old and new version) per batch.
    SELECT * INTO h FROM reel.reactor_handled WHERE reactor = v_reactor FOR UPDATE;
    FOR e IN SELECT * FROM jsonb_array_elements(p_events) LOOP
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
        SELECT coalesce(max(version), 0) + 1 INTO v_version FROM public.events WHERE stream_id = e->>'stream_id';
        INSERT INTO public.events (stream_id, version, event_type, data, metadata)
        VALUES (e->>'stream_id', v_version, e->>'event_type', e->'data', e->'metadata')
        RETURNING id INTO v_position;
        INSERT INTO reel.emitted VALUES (v_reactor, (e->>'cause')::bigint, (e->>'index')::integer, p_namespace, v_position);
        n_emitted := n_emitted + 1;
    END LOOP;
    FOR t IN SELECT * FROM jsonb_array_elements(p_timers) LOOP
        IF t ? 'cancel' THEN
            DELETE FROM reel.timers WHERE reactor = v_reactor AND key = t->>'key';
        ELSIF h.namespace = p_namespace
              OR ((t->'event'->>'cause_tx')::bigint, (t->'event'->>'cause')::bigint) > (h.tx, h.position) THEN
            INSERT INTO reel.timers VALUES (v_reactor, t->>'key', (t->>'due_micros')::bigint,
                (t->'event'->>'cause')::bigint, (t->'event'->>'index')::integer, t->'event')
            ON CONFLICT (reactor, key) DO UPDATE SET due_micros = excluded.due_micros, cause = excluded.cause,
                idx = excluded.idx, event = excluded.event;
        END IF;
    END LOOP;
    IF (p_to_tx, p_to_position) > (h.tx, h.position) THEN
        UPDATE reel.reactor_handled SET namespace = p_namespace, tx = p_to_tx, position = p_to_position
         WHERE reactor = v_reactor;
    END IF;
    INSERT INTO reel.reactor_counts VALUES (p_namespace, n_emitted, n_dropped)
    ON CONFLICT (namespace) DO UPDATE SET emitted = reel.reactor_counts.emitted + excluded.emitted,
        dropped = reel.reactor_counts.dropped + excluded.dropped;
    RETURN QUERY SELECT n_emitted, n_dropped;
END
$$;

REVOKE ALL ON FUNCTION reel.emit(TEXT, BIGINT, BIGINT, JSONB, JSONB) FROM PUBLIC;
