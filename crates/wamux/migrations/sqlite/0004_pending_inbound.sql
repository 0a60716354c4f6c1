-- whatsapp-rust's pending-inbound buffer, kept in our database instead of the device store:
-- a decrypted message waits here from before its Signal state is saved until the durability
-- hook has committed it, so a crash in between replays it instead of losing it. Written
-- set-wise with the inbound messages of every session (see whatsapp::device_store).
CREATE TABLE pending_inbound (
    device_id   INTEGER NOT NULL,
    chat        TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    message     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, chat, sender, id)
) WITHOUT ROWID;
CREATE INDEX pending_inbound_by_age ON pending_inbound (created_at);
