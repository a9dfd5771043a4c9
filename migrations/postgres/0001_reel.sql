-- reel on PostgreSQL: the events table (created, or adapted if it exists) and
-- reel's own schema. Idempotent: safe to apply to a database that already has
-- the classic events table, with reel or with `sqlx migrate run`.
--
-- Adding transaction_id to an existing table rewrites it (a volatile default):
-- writers wait for the duration. Existing rows all get this migration's
-- transaction id and keep their id order.

CREATE SCHEMA IF NOT EXISTS reel;
REVOKE ALL ON SCHEMA reel FROM PUBLIC;

CREATE TABLE IF NOT EXISTS public.events (
    id          BIGSERIAL PRIMARY KEY,
    stream_id   TEXT        NOT NULL,
    version     INTEGER     NOT NULL,
    event_type  TEXT        NOT NULL,
    data        JSONB       NOT NULL,
    metadata    JSONB       NOT NULL DEFAULT '{}',
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);

-- The id of the appending transaction: readers take only rows from
-- transactions below their snapshot's xmin, in (transaction_id, id) order,
-- so an id committed late is never skipped.
ALTER TABLE public.events ADD COLUMN IF NOT EXISTS transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS events_transaction_id_id_idx ON public.events (transaction_id, id);

-- Wake-ups: one notification per inserting statement, delivered at commit.
CREATE OR REPLACE FUNCTION reel.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('reel_events', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS reel_notify_events ON public.events;
CREATE TRIGGER reel_notify_events AFTER INSERT ON public.events
    FOR EACH STATEMENT EXECUTE FUNCTION reel.notify_events();

-- Each projection version's namespace: a schema owned by a login role of its own.
CREATE TABLE IF NOT EXISTS reel.namespaces (
    namespace     TEXT PRIMARY KEY,            -- name@version[+gN]
    name          TEXT        NOT NULL,
    version       TEXT        NOT NULL,
    generation    INTEGER     NOT NULL,
    schema_name   TEXT        NOT NULL UNIQUE,
    role_name     TEXT        NOT NULL UNIQUE,
    role_password TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which namespace serves reads of each projection.
CREATE TABLE IF NOT EXISTS reel.active (
    name      TEXT PRIMARY KEY,
    namespace TEXT NOT NULL
);

-- Checkpoints: everything at or before (tx, position) is applied.
CREATE TABLE IF NOT EXISTS reel.checkpoints (
    namespace   TEXT PRIMARY KEY REFERENCES reel.namespaces ON DELETE CASCADE,
    tx          BIGINT      NOT NULL DEFAULT 0,
    position    BIGINT      NOT NULL DEFAULT 0,
    initialized BOOLEAN     NOT NULL DEFAULT false,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events a projection could not apply, under its `skip` policy.
CREATE TABLE IF NOT EXISTS reel.dead_letters (
    namespace   TEXT        NOT NULL REFERENCES reel.namespaces ON DELETE CASCADE,
    position    BIGINT      NOT NULL,
    stream_id   TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    event_type  TEXT        NOT NULL,
    data        TEXT        NOT NULL,
    metadata    TEXT        NOT NULL,
    occurred_at TEXT        NOT NULL,
    error       TEXT        NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, position)
);

-- A projection's transaction runs as its own role, which cannot touch the
-- tables above. These functions (owned by reel's user) do what the role may:
-- act on its own namespace's rows, identified by the login role.
CREATE OR REPLACE FUNCTION reel.owns(p_namespace TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
    SELECT EXISTS (SELECT 1 FROM reel.namespaces WHERE namespace = p_namespace AND role_name = session_user)
$$;

CREATE OR REPLACE FUNCTION reel.read_checkpoint(p_namespace TEXT)
RETURNS TABLE (tx BIGINT, "position" BIGINT, initialized BOOLEAN)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
BEGIN
    IF NOT reel.owns(p_namespace) THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    RETURN QUERY SELECT c.tx, c.position, c.initialized FROM reel.checkpoints c WHERE c.namespace = p_namespace;
END
$$;

-- Compare-and-set: moves the checkpoint only from where the caller last left it.
CREATE OR REPLACE FUNCTION reel.advance(p_namespace TEXT, p_from_tx BIGINT, p_from_position BIGINT, p_to_tx BIGINT, p_to_position BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
BEGIN
    IF NOT reel.owns(p_namespace) THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    UPDATE reel.checkpoints
       SET tx = p_to_tx, position = p_to_position, initialized = true, updated_at = now()
     WHERE namespace = p_namespace AND tx = p_from_tx AND position = p_from_position;
    IF NOT FOUND THEN
        -- Aborts the batch's transaction: a fenced batch commits nothing.
        RAISE EXCEPTION 'the checkpoint of % is no longer at (%, %): another runtime moved it',
            p_namespace, p_from_tx, p_from_position USING ERRCODE = 'RL409';
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION reel.add_dead_letter(p_namespace TEXT, p_position BIGINT, p_stream_id TEXT, p_version BIGINT,
    p_event_type TEXT, p_data TEXT, p_metadata TEXT, p_occurred_at TEXT, p_error TEXT)
RETURNS VOID LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
BEGIN
    IF NOT reel.owns(p_namespace) THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    INSERT INTO reel.dead_letters (namespace, position, stream_id, version, event_type, data, metadata, occurred_at, error)
    VALUES (p_namespace, p_position, p_stream_id, p_version, p_event_type, p_data, p_metadata, p_occurred_at, p_error)
    ON CONFLICT (namespace, position) DO UPDATE SET error = excluded.error, failed_at = now();
END
$$;

CREATE OR REPLACE FUNCTION reel.list_dead_letters(p_namespace TEXT, p_after BIGINT, p_limit INTEGER)
RETURNS TABLE ("position" BIGINT, stream_id TEXT, version BIGINT, event_type TEXT, data TEXT, metadata TEXT,
               occurred_at TEXT, error TEXT, failed_at TIMESTAMPTZ)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
BEGIN
    IF NOT reel.owns(p_namespace) THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    RETURN QUERY SELECT d.position, d.stream_id, d.version, d.event_type, d.data, d.metadata, d.occurred_at, d.error, d.failed_at
                   FROM reel.dead_letters d
                  WHERE d.namespace = p_namespace AND d.position > p_after
                  ORDER BY d.position LIMIT p_limit;
END
$$;

CREATE OR REPLACE FUNCTION reel.remove_dead_letter(p_namespace TEXT, p_position BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, reel AS $$
BEGIN
    IF NOT reel.owns(p_namespace) THEN
        RAISE EXCEPTION 'namespace % does not belong to %', p_namespace, session_user USING ERRCODE = '42501';
    END IF;
    DELETE FROM reel.dead_letters WHERE namespace = p_namespace AND position = p_position;
    RETURN FOUND;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reel FROM PUBLIC;
-- Whoever appends events runs the wake-up trigger.
GRANT EXECUTE ON FUNCTION reel.notify_events() TO PUBLIC;
