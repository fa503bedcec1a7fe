-- The readiness check asks for TeleCMI agent rings (leg b) of the last day with no call-level
-- record after them. Only agent legs (TeleCMI's rings) enter this index, so other webhooks write
-- nothing more; without it the check read every TeleCMI record (about 0.4 s a million).
-- Its condition names the leg alone, which no query binds: SQLite prepares a statement again at
-- each bind of a parameter its plan compared with a partial index's condition, and the alert
-- pipeline binds the provider on every call it decides.
CREATE INDEX call_records_rings ON call_records (received_at) WHERE leg = 'b';
