-- One decision per call (or per agent's ring): requested in the same transaction as the record that
-- asks for it, taken once the settle window has passed, never taken twice.
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_id INTEGER NOT NULL REFERENCES call_records (id),
    decide_at INTEGER NOT NULL,
    decided_at INTEGER,
    verdict TEXT,
    UNIQUE (provider, subject)
);
CREATE INDEX decisions_due ON decisions (decided_at, decide_at);

-- An alert for one route's receiver; `context` is what its templates show, fixed when decided.
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id INTEGER NOT NULL REFERENCES decisions (id),
    record_id INTEGER NOT NULL REFERENCES call_records (id),
    route TEXT NOT NULL,
    receiver TEXT NOT NULL,
    kind TEXT NOT NULL,
    context TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (decision_id, route, receiver)
);

-- One message to send per alert, channel and destination; drained by the delivery worker.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    options TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    state TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until INTEGER,
    sent_at INTEGER,
    message_id TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (alert_id, channel, destination)
);
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_batches ON outbox (batch_key, state);

-- Telegram groups that became supergroups: later alerts go to the new chat id.
CREATE TABLE chat_migrations (
    old_chat_id INTEGER PRIMARY KEY,
    new_chat_id INTEGER NOT NULL,
    migrated_at INTEGER NOT NULL
);
