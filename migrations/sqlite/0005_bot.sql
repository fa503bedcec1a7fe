-- What the Telegram bot knows of each alert: the number it is about (for repeat callers and
-- automatic resolution), who claimed it, who called back, and when the caller was reached.
ALTER TABLE alerts ADD COLUMN number TEXT;
ALTER TABLE alerts ADD COLUMN claimed_by TEXT;
ALTER TABLE alerts ADD COLUMN claimed_at INTEGER;
ALTER TABLE alerts ADD COLUMN handled_by TEXT;
ALTER TABLE alerts ADD COLUMN handled_at INTEGER;
ALTER TABLE alerts ADD COLUMN reached_by TEXT;
ALTER TABLE alerts ADD COLUMN reached_at INTEGER;
CREATE INDEX alerts_open_by_number ON alerts (number, handled_at, reached_at);
CREATE INDEX outbox_by_message ON outbox (destination, message_id);
-- Repeat callers whose number could not be read as E.164 are counted by the number as sent.
CREATE INDEX call_records_by_raw_caller ON call_records (caller, received_at);

-- Telegram messages whose text or buttons must be brought up to date (a press, a resolution).
CREATE TABLE telegram_edits (
    chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    PRIMARY KEY (chat_id, message_id)
);

-- Chats the bot cannot deliver to (removed, blocked, migrated), with what fixes it.
CREATE TABLE telegram_chat_problems (
    chat_id INTEGER PRIMARY KEY,
    problem TEXT NOT NULL,
    fix TEXT NOT NULL,
    at INTEGER NOT NULL
);

-- Leases held by one instance at a time (the Telegram update consumer), and small named values
-- (the next Telegram update id) that a new lease holder carries on from.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_at INTEGER NOT NULL
);
CREATE TABLE bot_state (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
