-- A session's own settings: for now which chats' messages it drops before storage
-- (comma-separated chat classes: groups, status, channels, broadcast).
CREATE TABLE session_settings (
    session_id  TEXT PRIMARY KEY,
    ignored     TEXT NOT NULL DEFAULT ''
);
