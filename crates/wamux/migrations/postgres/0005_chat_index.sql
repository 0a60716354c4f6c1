-- A chat's messages by time: history filtered by chat, and the unread messages of a chat.
CREATE INDEX messages_by_chat ON messages (session_id, chat_id, timestamp DESC);
