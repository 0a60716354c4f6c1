-- Scoped API keys: only the SHA-256 digest of each key is kept. `sessions` and `scopes` are
-- JSON arrays of strings (`["tenant-a-*"]`, `["read","send"]`).
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    digest        BYTEA   NOT NULL UNIQUE,
    sessions      TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT
);

-- Every mutating API call: who (a key id, or NULL for the admin key), what, on which
-- session, and how it ended. Kept for WAMUX_AUDIT_RETENTION_DAYS.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT  NOT NULL,
    key_id      TEXT,
    method      TEXT    NOT NULL,
    route       TEXT    NOT NULL,
    session_id  TEXT,
    status      INTEGER NOT NULL,
    client      TEXT
);
CREATE INDEX audit_log_by_age ON audit_log (at);
