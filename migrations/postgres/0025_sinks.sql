-- Sinks (docs/adr/31-sinks.md): each sink's checkpoint (everything at or
-- before (tx, position) was confirmed by its broker) and which reel process
-- delivers it: `owner` holds a lease until `lease_until` (Unix
-- microseconds), renewed as it goes, so a dead process's sinks move to
-- another within the lease; the checkpoint moves only for the owner, from
-- where it left it (a compare-and-set: a process that lost its lease is
-- fenced).
CREATE TABLE IF NOT EXISTS reel.sinks (
    name        TEXT PRIMARY KEY,
    tx          BIGINT NOT NULL DEFAULT 0,
    position    BIGINT NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
