#!/usr/bin/env bash
# Webhook throughput as a share of the calibration (examples/calibration.rs:
# the same durable work, nothing else), measured interleaved in one run.
#
# wrk posts seed-shaped ticket.updated deliveries over 20,000 tickets
# (scripts/bench/deliveries.lua) at each connection count. For each count,
# every target gets a fresh process and database; the first COLD of each
# (which also creates the tickets) is the cold measurement; then RUNS rounds
# of DURATION each, in turn: calibration, Codex, calibration, Codex, ...
# Printed: every run, then per target the medians, Codex's throughput and
# p99 as a ratio to the calibration's, cold p99 / warm p99, non-2xx (must be
# 0) and Codex's peak RSS after the run; for Codex on PostgreSQL also the
# server's CPU per delivery (its processes share the machine with Codex and
# wrk; scripts/bench-pg-floor.sh measures the least server CPU this durable
# work can cost). Codex runs with every check on:
# secret, IP allowlist, rate limit (set high enough not to refuse), journal,
# one log line per delivery (to a file).
#
#   scripts/bench.sh [sqlite|postgres|all|perf]   (default: sqlite)
#     sqlite:   calibration and Codex on SQLite
#     postgres: also Codex on PostgreSQL (vs the calibration and Codex on SQLite)
#     all:      the same as postgres
#     perf:     after the cold runs, one DURATION run of each (calibration,
#               Codex on SQLite) under `perf record --call-graph dwarf`;
#               flat and per-thread profiles in PERF_DIR (default
#               /tmp/codex-perf), one run per count in CONNECTIONS
#               (default 64 here)
#   RUNS=5 DURATION=5s COLD=5s CONNECTIONS="8 64" WRK_THREADS=2
#   THREADS=<[server] threads and the calibration's workers (default 64)>
#   CODEX_BIN=<another build's binary, to compare>  CALIBRATION_BIN=<a built calibration>
#   BEFORE_BIN=<an earlier build's binary>: a further target, "before" (on
#     SQLite), interleaved with the others, with its own ratios; Codex on
#     SQLite is then also compared with it
#   KEEP=<directory to keep the wrk outputs and logs in>
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-sqlite}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
COLD=${COLD:-5s}
CONNECTIONS=${CONNECTIONS:-"8 64"}
WRK_THREADS=${WRK_THREADS:-2}
# shellcheck source=scripts/bench/common.sh
. scripts/bench/common.sh
case $WHICH in
  sqlite) TARGETS="calibration codex-sqlite" ;;
  perf)
    TARGETS="calibration codex-sqlite"
    CONNECTIONS=${CONNECTIONS_PERF:-64}
    PERF_DIR=${PERF_DIR:-/tmp/codex-perf}
    mkdir -p "$PERF_DIR"
    bench_install perf linux-perf
    ;;
  postgres | all) TARGETS="calibration codex-sqlite codex-postgres" ;;
  *) echo "usage: scripts/bench.sh [sqlite|postgres|all|perf]" >&2; exit 2 ;;
esac
[ -z "${BEFORE_BIN:-}" ] || TARGETS=${TARGETS/calibration/calibration before}

bench_install wrk wrk

[ -n "${CODEX_BIN:-}" ] || cargo build --release --quiet
[ -n "${CALIBRATION_BIN:-}" ] || cargo build --release --quiet --example calibration
BIN=${CODEX_BIN:-target/release/codex}
CAL=${CALIBRATION_BIN:-target/release/examples/calibration}
WORK=$(mktemp -d /tmp/codex-bench.XXXXXX)
declare -A PID PORT
# shellcheck source=scripts/pg.sh
. scripts/pg.sh
stop_all() {
  local pid
  for pid in "${PID[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PID[@]}"; do wait "$pid" 2>/dev/null || true; done
  PID=()
}
cleanup() {
  stop_all
  pg_stop
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/*.txt "$WORK"/*.log "$KEEP"/ 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# start <target> <connections>: a fresh process on a fresh database.
start() {
  local target=$1 conns=$2 port url
  port=$(bench_port)
  case $target in
    calibration)
      rm -f "$WORK"/calibration.db*
      "$CAL" "127.0.0.1:$port" "$WORK/calibration.db" ${THREADS:-64} 2>"$WORK/$target-$conns.log" &
      ;;
    codex-* | before)
      if [ "$target" != codex-postgres ]; then
        rm -f "$WORK/$target".db*
        url="sqlite:///$WORK/$target.db"
      else
        pg_port=${PG_URL##*:}
        "${PG_AS[@]}" "$PG_BIN/psql" -q -h "$PG_DIR" -p "${pg_port%%/*}" -U postgres \
          -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" postgres >/dev/null
        url="${PG_URL%/postgres}/bench"
      fi
      bench_config "$WORK/$target.conf" "$port" "$url"
      bin=$BIN
      [ "$target" = before ] && bin=$BEFORE_BIN
      "$bin" serve --config "$WORK/$target.conf" 2>"$WORK/$target-$conns.log" &
      ;;
  esac
  PID[$target]=$!
  PORT[$target]=$port
  bench_wait_healthy "$port" && return 0
  echo "$target did not start; its log:" >&2
  cat "$WORK/$target-$conns.log" >&2
  exit 1
}

# cost <pid>: CPU clock ticks (utime + stime) and context switches of all
# its threads so far.
cost() {
  echo "$(awk '{print $14 + $15}' "/proc/$1/stat")" \
    "$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s}')"
}

# server_ticks <target>: CPU clock ticks of the PostgreSQL server's
# processes so far (the postmaster and its children: backends, WAL writer,
# checkpointer, autovacuum), for codex-postgres; 0 for the others.
server_ticks() {
  if [ "$1" = codex-postgres ]; then pg_server_ticks; else echo 0; fi
}

# measure <target> <connections> <label> <duration>: one wrk run, one line
# in results.tsv (with the target's CPU time and context switches per
# acknowledged delivery).
measure() {
  local target=$1 conns=$2 label=$3 duration=$4 out before
  out="$WORK/wrk-$target-$conns-$label.txt"
  before="$(cost "${PID[$target]}") $(server_ticks "$target")"
  CODEX_BENCH_SECRET=$BENCH_SECRET wrk -t"$WRK_THREADS" -c"$conns" -d"$duration" --latency \
    -s scripts/bench/deliveries.lua "http://127.0.0.1:${PORT[$target]}" >"$out"
  # shellcheck disable=SC2046
  python3 - "$out" "$target" "$conns" "$label" $before $(cost "${PID[$target]}") $(server_ticks "$target") "$(getconf CLK_TCK)" \
    >>"$WORK/results.tsv" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ticks0, switches0, server0, ticks1, switches1, server1, hz = map(int, sys.argv[5:12])
def unit(value):
    n, u = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
secs = unit(re.search(r"requests in ([\d.]+\w+)", text).group(1)) / 1000.0
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
errors = m.group(1) if (m := re.search(r"Socket errors: (.*)", text)) else "-"
p50 = unit(re.search(r"\s50%\s+([\d.]+\w+)", text).group(1))
p99 = unit(re.search(r"\s99%\s+([\d.]+\w+)", text).group(1))
acked = max(requests - non2xx, 1)
cpu_us = (ticks1 - ticks0) / hz * 1e6 / acked
switches = (switches1 - switches0) / acked
server_us = (server1 - server0) / hz * 1e6 / acked
print("\t".join(map(str, [sys.argv[3], sys.argv[2], sys.argv[4], round((requests - non2xx) / secs),
                          p50, p99, non2xx, errors, round(cpu_us), round(switches, 2), round(server_us)])))
PY
  tail -n 1 "$WORK/results.tsv" | awk -F'\t' '{printf "  %4s conns  %-15s %-5s %7d acknowledged/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %s  CPU %4d us/delivery%s  %5.2f switches/delivery  socket errors: %s\n", $1, $2, $3, $4, $5, $6, $7, $9, ($11 > 0 ? sprintf(" + PostgreSQL server %d", $11) : ""), $10, $8}'
}

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "codex: $BIN; calibration: $CAL;${BEFORE_BIN:+ before: $BEFORE_BIN;} $RUNS runs of $DURATION per point, interleaved; cold: the first $COLD of a fresh process"
case $WHICH in postgres | all) pg_start ;; esac # durable defaults: fsync on, synchronous_commit on
: >"$WORK/results.tsv"
: >"$WORK/rss.tsv"
for conns in $CONNECTIONS; do
  for target in $TARGETS; do start "$target" "$conns"; done
  for target in $TARGETS; do measure "$target" "$conns" cold "$COLD"; done
  if [ "$WHICH" = perf ]; then
    for target in $TARGETS; do
      data="$PERF_DIR/$target-$conns.data"
      # System-wide, then filtered by process: `perf record -p` missed
      # threads Codex started after it attached.
      perf record -q -a -F "${PERF_FREQUENCY:-499}" --call-graph dwarf,8192 -o "$data" 2>/dev/null &
      perf_pid=$!
      measure "$target" "$conns" perf "$DURATION"
      kill -INT "$perf_pid"; wait "$perf_pid" || true
      perf report -i "$data" --pid "${PID[$target]}" --no-inline --percentage relative --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' \
        | grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -60 >"$PERF_DIR/$target-$conns.symbols.txt" || true
      # Threads by name (the workers' numbers dropped), then by library.
      perf report -i "$data" --pid "${PID[$target]}" --no-inline --percentage relative --no-children --sort comm,dso --stdio 2>/dev/null \
        | awk '/^ +[0-9.]+%/ {sub(/%/, "", $1); sub(/-[0-9]+$/, "-N", $2); share[$2 " " $3] += $1}
            END {for (k in share) printf "%7.2f%%  %s\n", share[k], k}' \
        | sort -rn >"$PERF_DIR/$target-$conns.threads.txt" || true
      perf report -i "$data" --pid "${PID[$target]}" --no-inline --percentage relative --children --sort symbol --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -80 >"$PERF_DIR/$target-$conns.inclusive.txt" || true
      echo "  perf: $data, $PERF_DIR/$target-$conns.{symbols,threads,inclusive}.txt"
    done
  else
    for run in $(seq "$RUNS"); do
      for target in $TARGETS; do measure "$target" "$conns" "$run" "$DURATION"; done
    done
  fi
  for target in $TARGETS; do
    printf '%s\t%s\t%s\n' "$conns" "$target" "$(awk '/VmHWM/ {print $2}' "/proc/${PID[$target]}/status")" >>"$WORK/rss.tsv"
  done
  stop_all
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$WHICH" = perf ] && exit 0

python3 - "$WORK/results.tsv" "$WORK/rss.tsv" <<'PY'
import statistics, sys
from collections import defaultdict
runs, cold = defaultdict(list), {}
for line in open(sys.argv[1]):
    conns, target, label, acked, p50, p99, non2xx, _, cpu, switches, server = line.rstrip("\n").split("\t")
    row = (int(acked), float(p50), float(p99), int(non2xx), int(cpu), float(switches), int(server))
    if label == "cold":
        cold[conns, target] = row
    else:
        runs[conns, target].append(row)
rss = {(c, t): int(kb) / 1024 for c, t, kb in (l.split() for l in open(sys.argv[2]))}
print()
print("medians (acknowledged/s, p50, p99, CPU and context switches per delivery); ratios to the calibration;")
print("cold p99 / warm p99; non-2xx over all runs; peak RSS at the end. Codex on PostgreSQL: CPU per")
print("delivery is Codex's own, and the PostgreSQL server's (all its processes) is shown beside it")
for (conns, target), rows in runs.items():
    med = lambda i: statistics.median(r[i] for r in rows)
    acked, p50, p99 = med(0), med(1), med(2)
    non2xx = sum(r[3] for r in rows) + cold[conns, target][3]
    line = (f"{conns:>4} conns  {target:15} {acked:8.0f}/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
            f"{med(4):4.0f} us {med(5):5.2f} sw")
    if med(6):
        line += f" (+ PostgreSQL server {med(6):.0f} us)"
    if target != "calibration":
        base = runs[conns, "calibration"]
        b_acked = statistics.median(r[0] for r in base)
        b_p99 = statistics.median(r[2] for r in base)
        b_cpu = statistics.median(r[4] for r in base)
        line += (f"  = {acked / b_acked:4.0%} of calibration throughput, p99 {p99 / b_p99:.2f}x, "
                 f"CPU/delivery {med(4) / max(b_cpu, 1):.2f}x")
        other = {"codex-postgres": "codex-sqlite", "codex-sqlite": "before"}.get(target)
        if (conns, other) in runs:
            s = runs[conns, other]
            line += (f"; vs {other}: {acked / statistics.median(r[0] for r in s):.0%}, "
                     f"p99 {p99 / statistics.median(r[2] for r in s):.2f}x")
    line += f"  cold p99 {cold[conns, target][2] / p99:.1f}x warm  non-2xx {non2xx}  peak RSS {rss[conns, target]:.1f} MB"
    print(line)
PY
