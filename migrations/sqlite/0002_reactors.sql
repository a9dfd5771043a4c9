-- Reactors (docs/adr/23-reactors-exactly-once.md): what they emitted, keyed
-- by (reactor, cause, index); how far any namespace of each reactor has
-- handled the log, and which; their pending timers. Written by reel when it
-- forwards a namespace's outbox, in one transaction with the events.
CREATE TABLE IF NOT EXISTS reel_emitted (
    reactor   TEXT    NOT NULL,
    cause     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (reactor, cause, idx)
);
CREATE TABLE IF NOT EXISTS reel_reactor_handled (
    reactor   TEXT PRIMARY KEY,
    namespace TEXT    NOT NULL,
    position  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reel_reactor_counts (
    namespace TEXT PRIMARY KEY,
    emitted   INTEGER NOT NULL DEFAULT 0,
    dropped   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reel_timers (
    reactor    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    due_micros INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    PRIMARY KEY (reactor, key)
);
