-- Webhooks and their durable outbox. The `events` table (0001) is the outbox's source: each
-- session's worker reads it after its cursor and turns matching events into deliveries, in
-- the same transaction as advancing the cursor. Times here are unix milliseconds, because
-- retry delays can be shorter than a second in tests.

-- One webhook per session, set through the API. The global webhook lives in config.
CREATE TABLE webhooks (
    session_id      TEXT    PRIMARY KEY,
    url             TEXT    NOT NULL,
    -- JSON array of event names; ["all"] for everything.
    events          TEXT    NOT NULL,
    -- JSON object of extra request headers. The values are the user's secrets: never
    -- returned by the API or logged.
    headers         TEXT    NOT NULL DEFAULT '{}',
    secret          TEXT    NOT NULL,
    -- Set when the receiver answered 410 Gone; setting the webhook again clears it.
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- The global webhook's durable state: where it started reading the log (so a session seen for
-- the first time is served from then on, not from the beginning of time), its secret when
-- config gives none, and whether a 410 disabled it.
CREATE TABLE webhook_global (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    url             TEXT    NOT NULL,
    start_event_id  INTEGER NOT NULL,
    secret          TEXT    NOT NULL,
    disabled_reason TEXT
);

-- How far each session's outbox has read `events`.
CREATE TABLE webhook_cursors (
    session_id    TEXT    PRIMARY KEY,
    last_event_id INTEGER NOT NULL
);

-- One row per (event, target). `target` is 'session' (the session's own webhook) or 'global'.
-- `chat_key` is the ordering group: deliveries of one chat go out one at a time, in id order.
-- status: pending -> delivered | failed (rejected, or 410) | dead (retries exhausted)
--         | cancelled (webhook removed); failed/dead/cancelled can be retried by hand.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT    NOT NULL,
    event_id        INTEGER NOT NULL,
    target          TEXT    NOT NULL,
    chat_key        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- While set and in the future, a worker is sending this delivery. A worker that dies
    -- leaves it to expire, and the delivery is sent again.
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (event_id, target)
);
CREATE INDEX webhook_deliveries_heads
    ON webhook_deliveries (session_id, status, target, chat_key, id);
CREATE INDEX webhook_deliveries_by_session ON webhook_deliveries (session_id, id DESC);

-- A random tag for this database, part of every `webhook-id`, so ids stay unique for a
-- receiver that deduplicates even if the database is recreated and event ids start over.
CREATE TABLE webhook_instance (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    tag TEXT    NOT NULL
);
INSERT INTO webhook_instance (id, tag) VALUES (1, lower(hex(randomblob(4))));
