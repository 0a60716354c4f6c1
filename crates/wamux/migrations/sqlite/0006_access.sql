-- Scoped API keys: only the SHA-256 digest of each key is kept. `sessions` and `scopes` are
-- JSON arrays of strings (`["tenant-a-*"]`, `["read","send"]`).
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    digest        BLOB    NOT NULL UNIQUE,
    sessions      TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER
);

-- Every mutating API call: who (a key id, or NULL for the admin key), what, on which
-- session, and how it ended. Kept for WAMUX_AUDIT_RETENTION_DAYS.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    key_id      TEXT,
    method      TEXT    NOT NULL,
    route       TEXT    NOT NULL,
    session_id  TEXT,
    status      INTEGER NOT NULL,
    client      TEXT
);
CREATE INDEX audit_log_by_age ON audit_log (at);
