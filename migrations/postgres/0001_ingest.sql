-- Every accepted provider record, normalized; one row per (provider, dedup_key), so a resend is stored once.
CREATE TABLE call_records (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    call_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    leg TEXT NOT NULL,
    direction TEXT NOT NULL,
    outcome TEXT NOT NULL,
    provider_status TEXT,
    caller TEXT,
    caller_e164 TEXT,
    caller_name TEXT,
    called TEXT,
    called_e164 TEXT,
    agent TEXT,
    agent_phone TEXT,
    agent_phone_e164 TEXT,
    call_group TEXT,
    started_at BIGINT,
    answered_at BIGINT,
    ended_at BIGINT,
    ring_seconds BIGINT,
    talk_seconds BIGINT,
    hangup TEXT,
    recording TEXT,
    extra TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    resends BIGINT NOT NULL DEFAULT 0,
    last_resent_at BIGINT,
    UNIQUE (provider, dedup_key)
);
CREATE INDEX call_records_by_conversation ON call_records (provider, conversation_id);
CREATE INDEX call_records_by_caller ON call_records (caller_e164, received_at);
CREATE INDEX call_records_by_received ON call_records (received_at);

-- The request each record came from, as received (secrets removed), for inspection and replay.
CREATE TABLE raw_requests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_record_id BIGINT NOT NULL REFERENCES call_records (id) ON DELETE CASCADE,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    remote_addr TEXT,
    received_at BIGINT NOT NULL
);
CREATE INDEX raw_requests_by_record ON raw_requests (call_record_id);

-- Requests refused with a 4xx, kept with the reason so a misconfigured provider can be diagnosed.
CREATE TABLE rejected_requests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    remote_addr TEXT,
    received_at BIGINT NOT NULL,
    status BIGINT NOT NULL,
    error TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX rejected_requests_by_received ON rejected_requests (received_at);
