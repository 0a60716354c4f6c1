-- Idempotency keys of send requests: the first request with a key is run, and its answer is
-- kept here for 24 hours, so a retry with the same key and body gets the same answer without
-- sending again. `status` and `response` stay NULL while the first request runs.
CREATE TABLE idempotency_keys (
    route       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    body_hash   BLOB    NOT NULL,
    status      INTEGER,
    response    BLOB,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (route, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
