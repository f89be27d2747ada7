#!/usr/bin/env bash
# Polling costs, against a fake PSA API (examples/fake_freshservice.rs,
# examples/fake_superops.rs: the tests' fakes as servers), SQLite:
#  1. a first sync of 10,000 tickets (`codex sync --once`): time and API
#     calls at two values of max_requests_per_minute (Freshservice: 40, a
#     Starter plan's default, and 600; SuperOps: 400, the default, and 800,
#     its whole limit);
#  2. API calls per day on a quiet account (200 open tickets, no changes),
#     with and without webhooks, simulated with every interval divided by
#     1,200 (a day in 72 s): listings every 5 min without webhooks and
#     hourly with them, a full run (deleted and spam listings, reconcile)
#     once a day.
#
#   scripts/bench-sync.sh [freshservice|superops|all]   (default: all)
#   FIRST_SYNC_RATES="40 600" DAY_SECONDS=72
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-all}
case "$WHICH" in
  freshservice | superops) PROVIDERS=$WHICH ;;
  all) PROVIDERS="freshservice superops" ;;
  *) echo "usage: $0 [freshservice|superops|all]" >&2; exit 2 ;;
esac

cargo build --release --quiet --bin codex --example fake_freshservice --example fake_superops
BIN=target/release/codex
WORK=$(mktemp -d /tmp/codex-bench-sync.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# start_fake <provider> <tickets>: starts the fake and writes the
# [provider] section that points Codex at it to $WORK/account.conf.
start_fake() {
  : >"$WORK/fake.out"
  "target/release/examples/fake_$1" "$2" >"$WORK/fake.out" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/fake.out" ] && break; sleep 0.1; done
  case "$1" in
    freshservice)
      read -r api_base api_key <"$WORK/fake.out"
      printf '[freshservice]\napi_base = %s\napi_key = %s\n' "$api_base" "$api_key" >"$WORK/account.conf" ;;
    superops)
      read -r api_url subdomain token <"$WORK/fake.out"
      printf '[superops]\napi_url = %s\nsubdomain = %s\napi_token = %s\n' \
        "$api_url" "$subdomain" "$token" >"$WORK/account.conf" ;;
  esac
}

# A delivery of ticket 1 as the provider sends it.
delivery() {
  case "$1" in
    freshservice) echo '{"event": "ticket.updated", "ticket_id": 1, "status_id": 2, "updated_at": "2024-03-01T00:01:00Z"}' ;;
    superops) echo '{"ticketId": "1", "status": "Open", "updatedTime": "2024-03-01T00:01:00"}' ;;
  esac
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)"

for provider in $PROVIDERS; do
  case "$provider" in
    freshservice) rates=${FIRST_SYNC_RATES-40 600}; day_rate=10000 ;;
    superops) rates=${FIRST_SYNC_RATES-400 800}; day_rate=800 ;;
  esac

  # 1. First sync of 10,000 tickets.
  for rate in $rates; do
    start_fake "$provider" 10000
    rm -f "$WORK"/first.db*
    {
      printf '[database]\nconnection_string = sqlite:///%s\n' "$WORK/first.db"
      cat "$WORK/account.conf"
      printf 'max_requests_per_minute = %s\ninitial_sync_days = 3650\n' "$rate"
    } >"$WORK/first.conf"
    start=$(date +%s.%N)
    "$BIN" sync --once --provider "$provider" --config "$WORK/first.conf" >"$WORK/first.json" 2>"$WORK/first.log"
    end=$(date +%s.%N)
    python3 - "$WORK/first.json" "$start" "$end" "$rate" "$provider" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
print(f"{sys.argv[5]}: first sync, 10,000 tickets, max_requests_per_minute = {sys.argv[4]}: "
      f"{float(sys.argv[3]) - float(sys.argv[2]):.1f} s, {run['api_calls']} API calls, "
      f"{run['tickets_seen']} tickets seen, outcome {run['outcome']}")
PY
    kill "${PIDS[-1]}"; unset 'PIDS[-1]'
  done

  # 2. A quiet account's calls per (simulated) day: 24 h -> 72 s, 1 h -> 3 s,
  #    5 min -> 0.25 s.
  day=${DAY_SECONDS:-72}
  for webhooks in false true; do
    start_fake "$provider" 200
    rm -f "$WORK"/day.db*
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
      printf '[server]\nbind = 127.0.0.1:%s\n' "$port"
      printf '[database]\nconnection_string = sqlite:///%s\n' "$WORK/day.db"
      printf '[webhooks]\nenabled = %s\nsecret = Bch6Rt3Yu8Io1Pa5Sd9Fg2Hj7Kl4Zx0Cv\n' "$webhooks"
      cat "$WORK/account.conf"
      printf 'max_requests_per_minute = %s\ninitial_sync_days = 3650\n' "$day_rate"
      printf '[scheduler]\nticket_sync_interval = 250ms\nticket_sync_interval_with_webhooks = 3s\n'
      printf 'webhook_healthy_window = 3s\nreconcile_interval = 72s\n'
    } >"$WORK/day.conf"
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
        curl -s -o /dev/null -X POST "http://127.0.0.1:$port/webhooks/$provider/ticket" \
          -H "X-Webhook-Secret: Bch6Rt3Yu8Io1Pa5Sd9Fg2Hj7Kl4Zx0Cv" -H "Content-Type: application/json" \
          -d "$(delivery "$provider")"
      fi
      sleep 1
    done
    kill "$codex" 2>/dev/null || { echo "codex stopped early:" >&2; tail -5 "$WORK/day.log" >&2; exit 1; }
    wait "$codex" 2>/dev/null || true
    PIDS=("${PIDS[@]/$codex}")
    python3 - "$WORK/day.db" "$start_id" "$webhooks" "$provider" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select kind, count(*), sum(api_calls) from sync_runs "
                  "where id > ? and outcome = 'ok' and provider = ? group by kind",
                  (int(sys.argv[2]), sys.argv[4])).fetchall()
counts = {kind: (runs, calls) for kind, runs, calls in rows}
runs = sum(r for r, _ in counts.values())
calls = sum(c for _, c in counts.values())
full_runs, full_calls = counts.get("full", (0, 0))
label = "with webhooks" if sys.argv[3] == "true" else "without webhooks"
print(f"{sys.argv[4]}: quiet account, one simulated day {label}: {runs} runs "
      f"({full_runs} full, {full_calls} calls in them), {calls} API calls in all")
PY
  done
done
