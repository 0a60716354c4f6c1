-- What the account did to each chat, from this session or another of its devices:
-- pinned, archived, muted (until a unix-ms time; -1 for good), marked unread.
CREATE TABLE chat_state (
    session_id    TEXT    NOT NULL,
    chat_id       TEXT    NOT NULL,
    pinned        BOOLEAN NOT NULL DEFAULT FALSE,
    archived      BOOLEAN NOT NULL DEFAULT FALSE,
    muted_until   BIGINT,
    marked_unread BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (session_id, chat_id)
);
