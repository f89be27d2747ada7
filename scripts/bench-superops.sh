#!/usr/bin/env bash
# SuperOps polling costs, against the fake SuperOps GraphQL API
# (examples/fake_superops.rs, the tests' fake as a server), SQLite:
#  1. a first sync of 10,000 tickets (`codex sync --once`): time and API
#     calls at max_requests_per_minute 400 (the default) and 800 (SuperOps'
#     whole limit);
#  2. API calls per day on a quiet account (200 open tickets, no changes),
#     with and without webhooks, simulated with every interval divided by
#     1,200 (a day in 72 s): listings every 5 min without webhooks and
#     hourly with them, a full run once a day.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin codex --example fake_superops
BIN=target/release/codex
WORK=$(mktemp -d /tmp/codex-bench-superops.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

start_fake() {  # start_fake <tickets>: sets API_URL, SUBDOMAIN and TOKEN
  : >"$WORK/fake.out"
  target/release/examples/fake_superops "$1" >"$WORK/fake.out" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/fake.out" ] && break; sleep 0.1; done
  read -r API_URL SUBDOMAIN TOKEN <"$WORK/fake.out"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)"

# 1. First sync of 10,000 tickets.
for rate in ${FIRST_SYNC_RATES-400 800}; do
  start_fake 10000
  rm -f "$WORK"/first.db*
  cat >"$WORK/first.conf" <<CONF
[database]
connection_string = sqlite:///$WORK/first.db
[superops]
api_url = $API_URL
subdomain = $SUBDOMAIN
api_token = $TOKEN
max_requests_per_minute = $rate
initial_sync_days = 3650
CONF
  start=$(date +%s.%N)
  "$BIN" sync --once --provider superops --config "$WORK/first.conf" >"$WORK/first.json" 2>"$WORK/first.log"
  end=$(date +%s.%N)
  python3 - "$WORK/first.json" "$start" "$end" "$rate" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
print(f"first sync, 10,000 tickets, max_requests_per_minute = {sys.argv[4]}: "
      f"{float(sys.argv[3]) - float(sys.argv[2]):.1f} s, {run['api_calls']} API calls, "
      f"{run['tickets_seen']} tickets seen, outcome {run['outcome']}")
PY
  kill "${PIDS[-1]}"; unset 'PIDS[-1]'
done

# 2. A quiet account's calls per (simulated) day: 24 h -> 72 s, 1 h -> 3 s,
#    5 min -> 0.25 s.
day=${DAY_SECONDS:-72}
for webhooks in false true; do
  start_fake 200
  rm -f "$WORK"/day.db*
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$WORK/day.conf" <<CONF
[server]
bind = 127.0.0.1:$port
[database]
connection_string = sqlite:///$WORK/day.db
[webhooks]
enabled = $webhooks
secret = bench-secret-0123456789abcdef
[superops]
api_url = $API_URL
subdomain = $SUBDOMAIN
api_token = $TOKEN
max_requests_per_minute = 800
initial_sync_days = 3650
[scheduler]
ticket_sync_interval = 250ms
ticket_sync_interval_with_webhooks = 3s
webhook_healthy_window = 3s
reconcile_interval = 72s
CONF
  "$BIN" serve --config "$WORK/day.conf" 2>"$WORK/day.log" &
  codex=$!
  PIDS+=($codex)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/webhooks/health" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/webhooks/health" >/dev/null || { cat "$WORK/day.log" >&2; exit 1; }
  # Let the first sync (the whole history) finish, then count a day.
  sleep 2
  start_id=$(python3 -c "import sqlite3; print(sqlite3.connect('$WORK/day.db').execute('select coalesce(max(id), 0) from sync_runs').fetchone()[0])")
  end=$((SECONDS + day))
  while [ $SECONDS -lt $end ]; do
    if [ "$webhooks" = true ]; then
      # A duplicate delivery every simulated 20 minutes: webhooks are working.
      curl -s -o /dev/null -X POST "http://127.0.0.1:$port/webhooks/superops/ticket" \
        -H "X-Webhook-Secret: bench-secret-0123456789abcdef" -H "Content-Type: application/json" \
        -d '{"ticketId": "1", "status": "Open", "updatedTime": "2024-03-01T00:01:00"}'
    fi
    sleep 1
  done
  kill "$codex" 2>/dev/null || { echo "codex stopped early:" >&2; tail -5 "$WORK/day.log" >&2; exit 1; }
  wait "$codex" 2>/dev/null || true
  python3 - "$WORK/day.db" "$start_id" "$webhooks" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select kind, count(*), sum(api_calls) from sync_runs where id > ? and outcome = 'ok' and provider = 'superops' group by kind",
                  (int(sys.argv[2]),)).fetchall()
counts = {kind: (runs, calls) for kind, runs, calls in rows}
runs = sum(r for r, _ in counts.values())
calls = sum(c for _, c in counts.values())
full_runs, full_calls = counts.get("full", (0, 0))
label = "with webhooks" if sys.argv[3] == "true" else "without webhooks"
print(f"quiet account, one simulated day {label}: {runs} runs ({full_runs} full, {full_calls} calls), "
      f"{calls} API calls in all")
PY
done
