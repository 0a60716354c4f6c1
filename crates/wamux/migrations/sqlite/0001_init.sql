-- Sessions, messages and the event log. Times are unix seconds.

-- `device_id` is the session's row in the whatsapp-rust device store (a separate file);
-- AUTOINCREMENT so a deleted session's number is never handed to a new one.
CREATE TABLE sessions (
    device_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    status        TEXT    NOT NULL,
    status_reason TEXT,
    -- 1 once paired: such sessions are restored at startup without a new QR.
    logged_in     INTEGER NOT NULL DEFAULT 0,
    phone         TEXT,
    jid           TEXT,
    lid           TEXT,
    push_name     TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Every message in and out. `sender` is part of the identity because WhatsApp stanza ids
-- are unique only within a (chat, sender) pair.
CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    from_me     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    -- The public JSON shape (see DESIGN.md), kept whole so history, webhooks and
    -- Socket.IO hand out the same thing; `status` above is authoritative.
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (session_id, chat_id, sender, id)
);
CREATE INDEX messages_by_session_time ON messages (session_id, timestamp DESC, seq DESC);
CREATE INDEX messages_by_id ON messages (session_id, id);

-- The event log: the durable source for webhooks and any replay. Rows are written in the
-- same transaction as the change they describe.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    chat_id     TEXT,
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_by_session ON events (session_id, id);
