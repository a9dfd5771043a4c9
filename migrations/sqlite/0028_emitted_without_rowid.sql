-- The log's keys of emitted events (docs/adr/23-reactors-exactly-once.md) in a table
-- clustered by its key: an append of an emission writes one b-tree, not a
-- row and an index of it, and a look at a range of causes reads the rows
-- themselves (docs/benchmarks.md, "Reactors").
CREATE TABLE reel_emitted_keyed (
    reactor   TEXT    NOT NULL,
    cause     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (reactor, cause, idx)
) WITHOUT ROWID;
INSERT INTO reel_emitted_keyed (reactor, cause, idx, namespace, position)
    SELECT reactor, cause, idx, namespace, position FROM reel_emitted;
DROP TABLE reel_emitted;
ALTER TABLE reel_emitted_keyed RENAME TO reel_emitted;
