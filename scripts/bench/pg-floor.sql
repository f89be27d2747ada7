-- pgbench script for scripts/bench-pg-floor.sh: the least a PostgreSQL
-- server can do for a batch of 32 deliveries of scripts/bench/deliveries.lua.
-- One transaction: a plain upsert of the fields a delivery carries into the
-- predecessor's ticket_details (its unique key and seven indexes), with no
-- per-field versions, no old values returned and no tombstones, then 32
-- journal rows with a body of the deliveries' size, then COMMIT.
\set base random(1, 19968)
\set ts random(1, 1000000000)
BEGIN;
INSERT INTO ticket_details (external_id, external_source, subject, status, priority, status_id,
    priority_id, requester_email, requester_name, requester_id, responder_id, group_id,
    department_id, last_updated_at)
SELECT g, 'freshservice', 'Printer on floor ' || (g % 12) || ' is jammed',
    (ARRAY['Open', 'Pending', 'Resolved', 'Closed', 'Waiting'])[g % 5 + 1],
    (ARRAY['Low', 'Medium', 'High', 'Urgent'])[g % 4 + 1], g % 5, g % 4 + 1,
    'user' || g || '@example.com', 'User ' || g, 100000 + g, 2000 + g % 7, 300 + g % 3, 40 + g % 5,
    (to_timestamp(CAST(:ts AS int8) + g) AT TIME ZONE 'UTC')::text
FROM generate_series(CAST(:base AS int8), CAST(:base AS int8) + 31) g
ON CONFLICT (external_id, external_source) DO UPDATE SET subject = excluded.subject,
    status = excluded.status, priority = excluded.priority, status_id = excluded.status_id,
    priority_id = excluded.priority_id, requester_email = excluded.requester_email,
    requester_name = excluded.requester_name, requester_id = excluded.requester_id,
    responder_id = excluded.responder_id, group_id = excluded.group_id,
    department_id = excluded.department_id, last_updated_at = excluded.last_updated_at;
INSERT INTO webhook_events (provider, received_at, client_ip, event, ticket_id, outcome, error, body)
SELECT 'freshservice', now()::text, '127.0.0.1', 'ticket.updated', g, 'updated', NULL,
    convert_to(repeat('{"event": "ticket.updated", "ticket_id": 1}', 11), 'UTF8')
FROM generate_series(CAST(:base AS int8), CAST(:base AS int8) + 31) g;
COMMIT;
