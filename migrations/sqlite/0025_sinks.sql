-- Sinks (docs/adr/31-sinks.md): each sink's checkpoint (everything at or
-- before (tx, position) was confirmed by its broker) and who delivers it:
-- `owner` holds a lease until `lease_until` (Unix microseconds), renewed as
-- it goes; the checkpoint moves only for the owner, from where it left it.
CREATE TABLE IF NOT EXISTS reel_sinks (
    name        TEXT PRIMARY KEY,
    tx          INTEGER NOT NULL DEFAULT 0,
    position    INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
);
