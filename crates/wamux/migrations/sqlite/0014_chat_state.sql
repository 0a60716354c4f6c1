-- What the account did to each chat, from this session or another of its devices:
-- pinned, archived, muted (until a unix-ms time; -1 for good), marked unread.
CREATE TABLE chat_state (
    session_id    TEXT    NOT NULL,
    chat_id       TEXT    NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 0,
    archived      INTEGER NOT NULL DEFAULT 0,
    muted_until   INTEGER,
    marked_unread INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, chat_id)
);
