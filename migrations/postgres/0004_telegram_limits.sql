-- Telegram's sending limits, kept across every instance: recent sends, and chats told to wait.
CREATE TABLE telegram_sends (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX telegram_sends_by_chat ON telegram_sends (chat_id, sent_at);
CREATE INDEX telegram_sends_by_time ON telegram_sends (sent_at);

CREATE TABLE telegram_chats (
    chat_id BIGINT PRIMARY KEY,
    blocked_until BIGINT NOT NULL
);

-- One row every instance updates first when it takes a sending slot, so slots are taken one at
-- a time across the cluster.
CREATE TABLE telegram_slot_lock (
    id BIGINT PRIMARY KEY,
    taken_at BIGINT NOT NULL
);
INSERT INTO telegram_slot_lock (id, taken_at) VALUES (1, 0);
