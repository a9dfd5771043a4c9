-- What a module's SQL leaves in its session ends with its batch (ADR 20).
-- RESET ALL undoes its settings; this undoes the rest: its temporary objects
-- (dropped) and the session-level advisory locks it took (released, all but
-- reel's own claim on the namespace, `pg_try_advisory_lock(hashtextextended(
-- namespace, 0))`). Run as the namespace's role, on its connection.
CREATE OR REPLACE FUNCTION reel.release_session(p_namespace TEXT) RETURNS VOID
LANGUAGE plpgsql SET search_path = pg_catalog SET client_min_messages = error AS $$
DECLARE
    claim CONSTANT BIGINT := hashtextextended(p_namespace, 0);
    l RECORD;
    k BIGINT;
    k1 INT;
    k2 INT;
BEGIN
    IF pg_my_temp_schema() <> 0 AND EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = pg_my_temp_schema()) THEN
        DISCARD TEMP;
    END IF;
    FOR l IN
        SELECT classid::bigint AS hi, objid::bigint AS lo, objsubid, mode = 'ShareLock' AS shared
        FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
    LOOP
        -- Each unlock releases one acquisition; a lock taken twice is held
        -- until both are released (an unlock of one not held says false).
        IF l.objsubid = 1 THEN
            k := (l.hi << 32) | l.lo;
            CONTINUE WHEN k = claim AND NOT l.shared;
            IF l.shared THEN
                WHILE pg_advisory_unlock_shared(k) LOOP END LOOP;
            ELSE
                WHILE pg_advisory_unlock(k) LOOP END LOOP;
            END IF;
        ELSE
            k1 := (l.hi - CASE WHEN l.hi >= 2147483648 THEN 4294967296 ELSE 0 END)::int;
            k2 := (l.lo - CASE WHEN l.lo >= 2147483648 THEN 4294967296 ELSE 0 END)::int;
            IF l.shared THEN
                WHILE pg_advisory_unlock_shared(k1, k2) LOOP END LOOP;
            ELSE
                WHILE pg_advisory_unlock(k1, k2) LOOP END LOOP;
            END IF;
        END IF;
    END LOOP;
END
$$;

