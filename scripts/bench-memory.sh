#!/usr/bin/env bash
# Codex's resident memory after a 64-connection run (issue 22: 20 MB or
# less). For each of RUNS fresh processes on a fresh SQLite database: RSS at
# start, then DURATION of wrk at CONNECTIONS (scripts/bench/deliveries.lua,
# every check on, as scripts/bench.sh), RSS at the end of the load and its
# peak, then RSS once the request pool has shrunk back to its size at start
# (workers idle for 20 s end), with the anonymous / file-backed split from
# /proc/PID/smaps_rollup (file-backed is mostly the binary's own code).
#
#   RUNS=3 DURATION=30s CONNECTIONS=64 CODEX_BIN=<another build's binary>
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-64}
# shellcheck source=scripts/bench/common.sh
. scripts/bench/common.sh
bench_install wrk wrk
[ -n "${CODEX_BIN:-}" ] || cargo build --release --quiet
BIN=${CODEX_BIN:-target/release/codex}
WORK=$(mktemp -d /tmp/codex-memory.XXXXXX)
CODEX_PID=""
cleanup() {
  [ -n "$CODEX_PID" ] && kill "$CODEX_PID" 2>/dev/null && wait "$CODEX_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
port=$(bench_port)
mb() { awk -v k="$1" '$1 == k ":" {printf "%.1f", $2 / 1024}' "/proc/$CODEX_PID/$2"; }
threads() { ls "/proc/$CODEX_PID/task" | wc -l; }

echo "machine: $(nproc) cores, $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$WORK/after"
for run in $(seq "$RUNS"); do
  rm -f "$WORK"/codex.db*
  bench_config "$WORK/codex.conf" "$port" "sqlite:///$WORK/codex.db"
  "$BIN" serve --config "$WORK/codex.conf" 2>"$WORK/codex.log" &
  CODEX_PID=$!
  bench_wait_healthy "$port" || { echo "Codex did not start; its log:" >&2; cat "$WORK/codex.log" >&2; exit 1; }
  start=$(mb VmRSS status) start_threads=$(threads)
  acked=$(CODEX_BENCH_SECRET=$BENCH_SECRET wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s scripts/bench/deliveries.lua \
    "http://127.0.0.1:$port" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  end=$(mb VmRSS status) peak=$(mb VmHWM status) load_threads=$(threads)
  # The pool shrinks back once its extra workers have been idle for 20 s.
  for _ in $(seq 600); do
    [ "$(threads)" -le "$start_threads" ] && break
    sleep 0.1
  done
  after=$(mb VmRSS status)
  echo "  run $run: start $start MB ($start_threads threads); $acked deliveries/s; end of load $end MB" \
    "($load_threads threads), peak $peak MB; after the pool shrank ($(threads) threads): $after MB" \
    "(anonymous $(mb Anonymous smaps_rollup) MB, file-backed $(awk '$1 == "Rss:" {r = $2} $1 == "Anonymous:" {a = $2} END {printf "%.1f", (r - a) / 1024}' "/proc/$CODEX_PID/smaps_rollup") MB)"
  echo "$after $peak" >>"$WORK/after"
  kill "$CODEX_PID"; wait "$CODEX_PID" 2>/dev/null || true
  CODEX_PID=""
done
sort -n "$WORK/after" | awk '{a[NR] = $1; if ($2 > p) p = $2} END {printf "RSS after a %s-connection run: median %.1f MB, highest %.1f MB (target: 20 MB or less); highest peak %.1f MB\n", c, a[int((NR + 1) / 2)], a[NR], p}' c="$CONNECTIONS"
