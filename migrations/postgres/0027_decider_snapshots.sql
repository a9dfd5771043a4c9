-- Snapshots of deciders' states (docs/adr/26-state-cache-and-snapshots.md):
-- the state of a stream after `version`, as the decider's code `code`
-- (version and file digest) folded it. One per decider and stream; a state
-- made by other code is not used, and is replaced by the next snapshot.
CREATE TABLE IF NOT EXISTS reel.decider_snapshots (
    decider   TEXT   NOT NULL,
    stream_id TEXT   NOT NULL,
    code      TEXT   NOT NULL,
    version   BIGINT NOT NULL,
    state     TEXT   NOT NULL,
    PRIMARY KEY (decider, stream_id)
);
