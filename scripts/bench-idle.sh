#!/usr/bin/env bash
# What an idle Codex costs: webhooks enabled, polling off, nothing arriving.
# Starts Codex, waits QUIET seconds with nothing arriving (after the one
# health check that says it is up), then measures over WINDOW seconds:
# CPU (utime + stime from /proc/PID/stat), wake-ups (context switches of
# all its threads, from /proc), then over a second WINDOW under
# `strace -f -c`: system calls and futex calls per second. Prints threads
# (by name), descriptors and resident memory, each next to its target.
#
#   scripts/bench-idle.sh [sqlite|postgres]   (default: sqlite)
#   QUIET=60 WINDOW=60 CODEX_BIN=<another build's binary>
#   THREADS=<[server] threads>
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-sqlite}
QUIET=${QUIET:-60}
WINDOW=${WINDOW:-60}
# shellcheck source=scripts/bench/common.sh
. scripts/bench/common.sh

bench_install strace strace

[ -n "${CODEX_BIN:-}" ] || cargo build --release --quiet
BIN=${CODEX_BIN:-target/release/codex}
WORK=$(mktemp -d /tmp/codex-idle.XXXXXX)
CODEX_PID=""
# shellcheck source=scripts/pg.sh
. scripts/pg.sh
cleanup() {
  [ -n "$CODEX_PID" ] && kill "$CODEX_PID" 2>/dev/null && wait "$CODEX_PID" 2>/dev/null
  pg_stop
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

case $WHICH in
  sqlite) URL="sqlite:///$WORK/idle.db" ;;
  postgres) pg_start; URL=$PG_URL ;;
  *) echo "usage: scripts/bench-idle.sh [sqlite|postgres]" >&2; exit 2 ;;
esac
PORT=$(bench_port)
bench_config "$WORK/codex.conf" "$PORT" "$URL"
"$BIN" serve --config "$WORK/codex.conf" 2>"$WORK/codex.log" &
CODEX_PID=$!
bench_wait_healthy "$PORT" || { echo "Codex did not start; its log:" >&2; cat "$WORK/codex.log" >&2; exit 1; }

# cpu_ticks: utime + stime of the whole process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$CODEX_PID/stat"; }
# switches: each thread alive now, "tid name context-switches".
switches() {
  local task
  for task in /proc/"$CODEX_PID"/task/*; do
    awk -v tid="${task##*/}" '/^Name/ {name = $2} /^(non)?voluntary_ctxt_switches/ {s += $2}
      END {sub(/-[0-9]+$/, "-N", name); print tid, name, s}' "$task/status" 2>/dev/null || true
  done
}

echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "codex: $BIN on $WHICH, webhooks enabled, polling off; quiet for ${QUIET} s, then two windows of ${WINDOW} s"
sleep "$QUIET"
ticks0=$(cpu_ticks); switches >"$WORK/switches0"; start=$(date +%s.%N)
sleep "$WINDOW"
ticks1=$(cpu_ticks); switches >"$WORK/switches1"; end=$(date +%s.%N)
threads=$(awk '/^Threads/ {print $2}' "/proc/$CODEX_PID/status")
descriptors=$(find "/proc/$CODEX_PID/fd" -mindepth 1 | wc -l)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$CODEX_PID/status")
names=$(cat /proc/"$CODEX_PID"/task/*/comm | sed 's/-[0-9]*$/-N/' | sort | uniq -c | sort -rn | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
timeout -s INT "$WINDOW" strace -f -c -o "$WORK/strace.txt" -p "$CODEX_PID" 2>/dev/null || true
sleep 1

python3 - "$WORK/strace.txt" "$WINDOW" "$ticks0" "$ticks1" "$(getconf CLK_TCK)" "$start" "$end" \
  "$WORK/switches0" "$WORK/switches1" "$threads" "$descriptors" "$rss" "$names" <<'PY'
import sys
(path, window, t0, t1, hz, start, end, s0, s1, threads, fds, rss, names) = sys.argv[1:]
window, elapsed = float(window), float(end) - float(start)
cpu_per_min = (int(t1) - int(t0)) / int(hz) / elapsed * 60
def switches(path):
    return {tid: (name, int(n)) for tid, name, n in (line.split() for line in open(path))}
before, after = switches(s0), switches(s1)
by_name = {}
for tid, (name, n) in after.items():
    by_name[name] = by_name.get(name, 0) + n - before.get(tid, (name, 0))[1]
wakeups = sum(by_name.values()) / elapsed
calls = {}
for line in open(path):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit():
        calls[parts[-1]] = int(parts[3])
total, futex = calls.get("total", 0), calls.get("futex", 0)
top = sorted(((n, c) for c, n in calls.items() if c != "total"), reverse=True)[:6]
def row(name, value, target, ok):
    print(f"  {name:44} {value:>14}   target {target:10} {'met' if ok else 'NOT met'}")
row("threads", threads, "<= 16", int(threads) <= 16)
row("wake-ups/s (context switches, /proc)", f"{wakeups:.1f}", "<= 5", wakeups <= 5)
row("system calls/s (strace -f -c)", f"{total / window:.1f}", "<= 5", total / window <= 5)
row("futex calls/s (strace -f -c)", f"{futex / window:.1f}", "<= 5", futex / window <= 5)
row("CPU s/min (utime + stime)", f"{cpu_per_min:.3f}", "< 0.05", cpu_per_min < 0.05)
row("resident memory", f"{int(rss) / 1024:.1f} MB", "<= 20 MB", int(rss) / 1024 <= 20)
print(f"  {'descriptors':44} {fds:>14}")
print(f"  threads by name: {names}")
print("  wake-ups/s by thread: " + ", ".join(f"{name} {n / elapsed:.1f}" for name, n in
      sorted(by_name.items(), key=lambda item: -item[1]) if n))
print(f"  system calls in {window:.0f} s: " + ", ".join(f"{c} {n}" for n, c in top))
PY
