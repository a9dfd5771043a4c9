-- Commands' answers under their idempotency keys (docs/adr/25-idempotency-keys.md):
-- kept in the transaction of the append they answer, so an answer is kept
-- exactly when its events are. The events appended are read back from the
-- log (`count` of them after `version`); refusals keep their reason.
CREATE TABLE IF NOT EXISTS reel_command_answers (
    key            TEXT    PRIMARY KEY,
    fingerprint    TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    count          INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    created_micros INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reel_command_answers_created ON reel_command_answers (created_micros);
