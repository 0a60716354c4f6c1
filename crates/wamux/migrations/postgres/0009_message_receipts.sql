-- Each participant's latest receipt for a group message of ours (rank: 1 delivered, 2 read).
CREATE TABLE message_receipts (
    session_id   TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    participant  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    rank         INTEGER NOT NULL,
    at           BIGINT  NOT NULL,
    PRIMARY KEY (session_id, message_id, participant)
);
