-- The readiness check asks for TeleCMI agent rings (leg b) of the last day with no call-level
-- record after them. Only those rings enter this index, so a webhook of any other kind writes
-- nothing more; without it the check read every TeleCMI record (about 0.4 s a million).
CREATE INDEX call_records_rings ON call_records (received_at) WHERE provider = 'telecmi' AND leg = 'b';
