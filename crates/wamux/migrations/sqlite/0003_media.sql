-- Media of inbound messages, downloaded after the message is committed. The durability hook
-- writes the message row and one job here in the same transaction; the message's event is
-- written later, by the worker, in the same transaction as the download's outcome (file or
-- error), so a webhook always carries the final `media` object and nothing is lost in a
-- crash between the two: unfinished jobs are resumed at startup.
CREATE TABLE media_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    -- The event to write once the outcome is known (message-received, message-from-me).
    event       TEXT    NOT NULL,
    -- What is needed to download and decrypt the file again (JSON, see src/media/mod.rs).
    media_ref   TEXT    NOT NULL,
    -- pending -> done
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (session_id, chat_id, sender, message_id)
);
CREATE INDEX media_jobs_pending ON media_jobs (state, id);
CREATE INDEX media_jobs_by_message ON media_jobs (session_id, message_id);
