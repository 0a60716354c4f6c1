-- A session's answer to calls: declined at once, with an optional text reply.
CREATE TABLE call_settings (
    session_id  TEXT    PRIMARY KEY,
    reject      INTEGER NOT NULL,
    message     TEXT
);
