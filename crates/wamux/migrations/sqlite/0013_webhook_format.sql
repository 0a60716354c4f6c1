-- How a webhook's deliveries are written: `wamux` (our body) or `evolution` (Evolution API
-- v2's envelope; `events` then holds Evolution subscription names). `by_events` posts each
-- event to `url/<event-name>`, `base64` adds received files inline (Evolution's options).
-- `enabled` = 0 keeps the webhook but sends nothing (Evolution's `enabled: false`).
ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'wamux';
ALTER TABLE webhooks ADD COLUMN by_events INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN base64 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
