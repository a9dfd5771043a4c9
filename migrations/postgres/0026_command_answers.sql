-- Commands' answers under their idempotency keys (docs/adr/25-idempotency-keys.md):
-- kept in the transaction of the append they answer, so an answer is kept
-- exactly when its events are, whichever reel process answered. The events
-- appended are read back from the log (`count` of them after `version`);
-- refusals keep their reason. In reel's schema, which no module role reaches.
CREATE TABLE IF NOT EXISTS reel.command_answers (
    key            TEXT    PRIMARY KEY,
    fingerprint    TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    count          BIGINT  NOT NULL,
    reason         TEXT    NOT NULL,
    created_micros BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS command_answers_created ON reel.command_answers (created_micros);
