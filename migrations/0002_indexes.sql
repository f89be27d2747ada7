-- Step 2: indexes, for SQLite and PostgreSQL (after step 1, so every column
-- they name exists). An index that exists under one of these names on other
-- columns (the predecessor's single-column ones) is dropped first and made
-- again here, in the migration's transaction.

-- The predecessor's indexes, by its names: its readers filter and order by
-- these. Each but the timestamp's also holds external_id, so no key is shared
-- by every row (external_source is, and company_account_number is where
-- there are no companies): PostgreSQL spends ten times longer per update on
-- an index where one key has a version of every row (measured, BENCHMARKS.md).
-- A query that filters by the first column uses them as before; the
-- migration rebuilds the predecessor's single-column ones so.
CREATE INDEX IF NOT EXISTS idx_ticket_updated ON ticket_details (last_updated_at);
CREATE INDEX IF NOT EXISTS idx_ticket_responder ON ticket_details (responder_id, external_id);
CREATE INDEX IF NOT EXISTS idx_ticket_group ON ticket_details (group_id, external_id);
CREATE INDEX IF NOT EXISTS idx_ticket_source ON ticket_details (external_source, external_id);
CREATE INDEX IF NOT EXISTS idx_ticket_company ON ticket_details (company_account_number, external_id);
CREATE INDEX IF NOT EXISTS idx_ticket_status ON ticket_details (status, external_id);
CREATE INDEX IF NOT EXISTS idx_ticket_priority ON ticket_details (priority, external_id);

CREATE INDEX IF NOT EXISTS webhook_events_received_at ON webhook_events (received_at);

CREATE INDEX IF NOT EXISTS sync_runs_provider_started ON sync_runs (provider, started_at);
