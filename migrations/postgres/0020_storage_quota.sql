-- A namespace's storage quota, checked in each batch before its commit (ADR 20):
-- the relations of its schema, each with its indexes and TOAST. Past the quota
-- the batch fails as the projection's doing (SQLSTATE RL413).
CREATE OR REPLACE FUNCTION reel.check_storage(p_schema TEXT, p_quota BIGINT) RETURNS VOID
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    held BIGINT;
BEGIN
    SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) INTO held
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = p_schema AND c.relkind IN ('r', 'm');
    IF held > p_quota THEN
        RAISE EXCEPTION 'storage quota of % MiB reached (storage-mib): the read model holds % MiB',
            p_quota >> 20, held >> 20 USING ERRCODE = 'RL413';
    END IF;
END
$$;
