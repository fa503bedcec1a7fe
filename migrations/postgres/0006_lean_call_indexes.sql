-- Every index on call_records is written by every webhook, so each one earns its place.
-- Callers without an E.164 number are rare: only their records enter the raw-number index.
DROP INDEX call_records_by_raw_caller;
CREATE INDEX call_records_by_raw_caller ON call_records (caller, received_at) WHERE caller_e164 IS NULL;
-- A call's records are found by conversation; the few whose own call id differs from their
-- conversation (TeleCMI's call-level CDR may) are found by call id through this small index,
-- instead of a scan of every record of the provider.
CREATE INDEX call_records_by_other_call_id ON call_records (provider, call_id) WHERE call_id <> conversation_id;
