-- Sends accepted with `"queue": true` or `"sendAt"`: a row per message until WhatsApp took
-- it. Its message row (status `queued`) is written in the same transaction. A row whose send
-- was cut short by a crash is sent again with the same message id, which the recipient's
-- devices take once. `send_at` orders a chat's messages; `retry_at` holds back a row whose
-- last attempt failed without letting the chat's later messages overtake it.
CREATE TABLE send_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    to_address  TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    send_at     INTEGER NOT NULL,
    retry_at    INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (session_id, message_id)
);
CREATE INDEX send_queue_due ON send_queue (session_id, chat_id, send_at, seq);
