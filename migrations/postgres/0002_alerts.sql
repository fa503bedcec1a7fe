-- One decision per call (or per agent's ring): requested in the same transaction as the record that
-- asks for it, taken once the settle window has passed, never taken twice.
CREATE TABLE decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_id BIGINT NOT NULL REFERENCES call_records (id),
    decide_at BIGINT NOT NULL,
    decided_at BIGINT,
    verdict TEXT,
    UNIQUE (provider, subject)
);
CREATE INDEX decisions_due ON decisions (decided_at, decide_at);

-- An alert for one route's receiver; `context` is what its templates show, fixed when decided.
CREATE TABLE alerts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_id BIGINT NOT NULL REFERENCES decisions (id),
    record_id BIGINT NOT NULL REFERENCES call_records (id),
    route TEXT NOT NULL,
    receiver TEXT NOT NULL,
    kind TEXT NOT NULL,
    context TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (decision_id, route, receiver)
);

-- One message to send per alert, channel and destination; drained by the delivery worker.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id BIGINT NOT NULL REFERENCES alerts (id),
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    options TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    state TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until BIGINT,
    sent_at BIGINT,
    message_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (alert_id, channel, destination)
);
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_batches ON outbox (batch_key, state);

-- Telegram groups that became supergroups: later alerts go to the new chat id.
CREATE TABLE chat_migrations (
    old_chat_id BIGINT PRIMARY KEY,
    new_chat_id BIGINT NOT NULL,
    migrated_at BIGINT NOT NULL
);
