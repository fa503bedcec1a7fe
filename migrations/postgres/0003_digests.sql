-- Where each digest has got to: the end of the last period it covered.
CREATE TABLE digest_state (
    name TEXT PRIMARY KEY,
    period_end BIGINT NOT NULL
);

-- A digest email for one or more periods, rendered when the period closed.
CREATE TABLE digest_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    periods BIGINT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (name, period_end)
);

-- The outbox carries digests too: a message belongs to an alert or to a digest run.
ALTER TABLE outbox ALTER COLUMN alert_id DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN digest_run_id BIGINT REFERENCES digest_runs (id);
ALTER TABLE outbox ADD CONSTRAINT outbox_digest_unique UNIQUE (digest_run_id, channel, destination);
ALTER TABLE outbox ADD CONSTRAINT outbox_one_owner CHECK ((alert_id IS NULL) <> (digest_run_id IS NULL));
