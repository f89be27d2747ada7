-- wrk script: seed-shaped Freshservice `ticket.updated` deliveries over
-- 20,000 distinct tickets. Every delivery carries a newer updated_at than
-- the one before it (one second later), so each is a real new version.
-- Environment: CODEX_BENCH_SECRET (the X-Webhook-Secret to send).

local secret = os.getenv("CODEX_BENCH_SECRET") or "Bch6Rt3Yu8Io1Pa5Sd9Fg2Hj7Kl4Zx0Cv"
local tickets = 20000
local statuses = {2, 3, 8, 9, 13}
local prefixes = {}
local head
local counter = 0
local clock = 1704067200 -- 2024-01-01T00:00:00Z, advanced per request

local threads = 0

function setup(thread)
  -- Threads start a million seconds apart so their versions never tie.
  thread:set("thread_offset", threads * 1000000)
  threads = threads + 1
end

function init(args)
  -- The per-ticket part of each body is built once; a request only adds
  -- the timestamp.
  for id = 1, tickets do
    prefixes[id] = string.format(
      '{"event": "ticket.updated", "ticket_id": %d, "subject": "Printer on floor %d is jammed", ' ..
      '"status_id": %d, "priority_id": %d, "requester_email": "user%d@example.com", ' ..
      '"requester_name": "User %d", "requester_id": %d, "responder_id": %d, "group_id": %d, ' ..
      '"department_id": %d, "updated_at": "',
      id, id % 12, statuses[(id % #statuses) + 1], (id % 4) + 1, id, id, 100000 + id,
      2000 + (id % 7), 300 + (id % 3), 40 + (id % 5))
  end
  head = "POST /webhooks/freshservice/ticket HTTP/1.1\r\n" ..
         "Host: " .. wrk.host .. ":" .. wrk.port .. "\r\n" ..
         "Content-Type: application/json\r\n" ..
         "X-Webhook-Secret: " .. secret .. "\r\n" ..
         "Content-Length: "
  clock = clock + (thread_offset or 0)
  math.randomseed(os.time() + (thread_offset or 0))
end

request = function()
  counter = counter + 1
  local id = math.random(1, tickets)
  local body = prefixes[id] .. os.date("!%Y-%m-%dT%H:%M:%SZ", clock + counter) .. '"}'
  return head .. #body .. "\r\n\r\n" .. body
end
