-- The secret a message carries (a poll's): the keys of its votes are drawn from it.
CREATE TABLE message_secrets (
    session_id  TEXT  NOT NULL,
    chat_id     TEXT  NOT NULL,
    id          TEXT  NOT NULL,
    secret      BYTEA NOT NULL,
    PRIMARY KEY (session_id, chat_id, id)
);
