-- The request a record came from (secrets removed) is now kept in the record's own row: the
-- webhook writer is what limits ingest, and a second table cost each webhook another row,
-- another index entry and another sequence update (see BENCHMARKS.md).
-- Adding nullable columns rewrites nothing, so the upgrade takes no time however many records
-- there are. Records stored before it keep their request in raw_requests, which ringback still
-- reads and retention empties; instances of the previous version, still running during a
-- rolling upgrade on PostgreSQL, go on writing there. A later release drops it.
ALTER TABLE call_records ADD COLUMN request_method TEXT;
ALTER TABLE call_records ADD COLUMN request_path TEXT;
ALTER TABLE call_records ADD COLUMN request_query TEXT;
ALTER TABLE call_records ADD COLUMN request_headers TEXT;
ALTER TABLE call_records ADD COLUMN request_body BLOB;
ALTER TABLE call_records ADD COLUMN request_remote_addr TEXT;
