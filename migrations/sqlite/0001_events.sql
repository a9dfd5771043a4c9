-- The events table of embedded mode (reel-data/events.db).
-- Writers must use BEGIN IMMEDIATE: one writer at a time keeps ids gap-free
-- in commit order, which is what lets readers tail with `id > cursor`.
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    data        TEXT    NOT NULL,                 -- JSON
    metadata    TEXT    NOT NULL DEFAULT '{}',    -- JSON
    occurred_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    UNIQUE (stream_id, version)
);
