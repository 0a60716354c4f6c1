-- How the session's queued messages are paced (JSON of `model::Pacing`; empty: not paced).
ALTER TABLE session_settings ADD COLUMN pacing TEXT NOT NULL DEFAULT '';
