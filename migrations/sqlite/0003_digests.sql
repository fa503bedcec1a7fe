-- Where each digest has got to: the end of the last period it covered.
CREATE TABLE digest_state (
    name TEXT PRIMARY KEY,
    period_end INTEGER NOT NULL
);

-- A digest email for one or more periods, rendered when the period closed.
CREATE TABLE digest_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    periods INTEGER NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (name, period_end)
);

-- The outbox carries digests too: a message belongs to an alert or to a digest run.
CREATE TABLE outbox_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER REFERENCES alerts (id),
    digest_run_id INTEGER REFERENCES digest_runs (id),
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
    UNIQUE (alert_id, channel, destination),
    UNIQUE (digest_run_id, channel, destination),
    CHECK ((alert_id IS NULL) <> (digest_run_id IS NULL))
);
INSERT INTO outbox_v3 (id, alert_id, channel, destination, options, batch_key, state, not_before,
    deadline, attempts, last_error, lease_until, sent_at, message_id, created_at)
SELECT id, alert_id, channel, destination, options, batch_key, state, not_before, deadline, attempts,
    last_error, lease_until, sent_at, message_id, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (state, not_before);
CREATE INDEX outbox_batches ON outbox (batch_key, state);
