#!/usr/bin/env bash
# Throughput benchmark: release build, a temp database, wrk posting
# seed-shaped ticket.updated deliveries over 20,000 tickets at 8 and 64
# connections. Prints acknowledged events/s, non-2xx, p50/p99 and peak RSS
# for each run. Every check is on: secret, IP allowlist, rate limit (set
# high enough not to refuse), journal.
#
# Each run starts a fresh process and measures twice on new connections:
# cold, the first COLD (10 s) after start (which also creates the 20,000
# tickets), then warm, DURATION right after; it prints both p99 and their
# ratio.
#
#   scripts/bench.sh [sqlite|postgres|all]   (default: all)
#   DURATION=20s COLD=10s CONNECTIONS="8 64" WRK_THREADS=2 THREADS=<[server] threads>
#   CODEX_BIN=<another build's binary, to compare>
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-all}
DURATION=${DURATION:-20s}
COLD=${COLD:-10s}
CONNECTIONS=${CONNECTIONS:-"8 64"}
WRK_THREADS=${WRK_THREADS:-2}
SECRET=Bch6Rt3Yu8Io1Pa5Sd9Fg2Hj7Kl4Zx0Cv

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --quiet
BIN=${CODEX_BIN:-target/release/codex}
WORK=$(mktemp -d /tmp/codex-bench.XXXXXX)
CODEX_PID=""
# shellcheck source=scripts/pg.sh
. scripts/pg.sh
cleanup() {
  [ -n "$CODEX_PID" ] && kill "$CODEX_PID" 2>/dev/null && wait "$CODEX_PID" 2>/dev/null
  pg_stop
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_one <backend> <connection string> <connections>
run_one() {
  local backend=$1 url=$2 conns=$3 port
  port=$(free_port)
  cat >"$WORK/codex.conf" <<CONF
[server]
bind = 127.0.0.1:$port
${THREADS:+threads = $THREADS}
[database]
connection_string = $url
[webhooks]
enabled = true
secret = $SECRET
allowed_ips = 127.0.0.1/32
rate_limit_per_minute = 100000000
[scheduler]
sync_tickets_enabled = false
CONF
  "$BIN" serve --config "$WORK/codex.conf" 2>"$WORK/codex-$backend-$conns.log" &
  CODEX_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/webhooks/health" >/dev/null && break
    sleep 0.1
  done
  # Cold: the first seconds of a fresh process, on new connections; it
  # creates the 20,000 tickets (the warm run updates existing ones). The
  # warm run starts right after, on new connections again.
  CODEX_BENCH_SECRET=$SECRET wrk -t"$WRK_THREADS" -c"$conns" -d"$COLD" --latency \
    -s scripts/bench/deliveries.lua "http://127.0.0.1:$port" >"$WORK/cold.txt"
  CODEX_BENCH_SECRET=$SECRET wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --latency \
    -s scripts/bench/deliveries.lua "http://127.0.0.1:$port" >"$WORK/wrk.txt"
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$CODEX_PID/status")
  kill "$CODEX_PID"; wait "$CODEX_PID" || true
  CODEX_PID=""
  python3 - "$WORK/wrk.txt" "$backend" "$conns" "$rss" "$WORK/cold.txt" "$COLD" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
cold = open(sys.argv[5]).read()
backend, conns, rss_kb = sys.argv[2], sys.argv[3], int(sys.argv[4])
def unit(value):
    n, u = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
secs = unit(re.search(r"requests in ([\d.]+\w+)", text).group(1)) / 1000.0
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
errors = re.search(r"Socket errors: (.*)", text)
p50 = unit(re.search(r"\s50%\s+([\d.]+\w+)", text).group(1))
p99 = unit(re.search(r"\s99%\s+([\d.]+\w+)", text).group(1))
acked = (requests - non2xx) / secs
print(f"{backend:9} {conns:>4} conns: {acked:9.0f} acknowledged/s  non-2xx {non2xx}  "
      f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  peak RSS {rss_kb / 1024:.1f} MB"
      + (f"  socket errors: {errors.group(1)}" if errors else ""))
cold_p50 = unit(re.search(r"\s50%\s+([\d.]+\w+)", cold).group(1))
cold_p99 = unit(re.search(r"\s99%\s+([\d.]+\w+)", cold).group(1))
cold_errors = re.search(r"Socket errors: (.*)", cold)
print(f"{backend:9} {conns:>4} conns: cold (first {sys.argv[6]} of a fresh process): p50 {cold_p50:.2f} ms  "
      f"p99 {cold_p99:.2f} ms = {cold_p99 / p99:.1f} x warm p99"
      + (f"  socket errors: {cold_errors.group(1)}" if cold_errors else ""))
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%d)"
if [ "$WHICH" = sqlite ] || [ "$WHICH" = all ]; then
  for conns in $CONNECTIONS; do
    rm -f "$WORK"/bench.db*
    run_one sqlite "sqlite:///$WORK/bench.db" "$conns"
  done
fi
if [ "$WHICH" = postgres ] || [ "$WHICH" = all ]; then
  pg_start  # durable defaults: fsync on, synchronous_commit on
  for conns in $CONNECTIONS; do
    "${PG_AS[@]}" "$PG_BIN/psql" -q -h "$PG_DIR" -p "${PG_URL##*:}" -U postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" postgres >/dev/null 2>&1 \
      || psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null
    run_one postgres "${PG_URL%/postgres}/bench" "$conns"
  done
fi
