#!/usr/bin/env bash
# The recovery table for BENCHMARKS.md: runs the fault suite
# (tests/faults.rs) against both backends and prints one row per fault:
# how long the fault lasted, when health first answered "unavailable", how
# long after the database answered again deliveries were acknowledged, the
# answers senders got during the fault, and how many deliveries were
# acknowledged (every one is checked to be stored: "lost" is always 0, or
# the run fails). Needs root for the tmpfs cases.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pg.sh
. scripts/pg.sh
test_env

LOG=$(mktemp /tmp/codex-faults.XXXXXX)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
started=$(date +%s)
if ! cargo test --test faults -- --nocapture >"$LOG" 2>&1; then
  grep -v '^\[' "$LOG" | tail -40
  echo "the fault suite failed (full output: $LOG)" >&2
  exit 1
fi
echo "fault suite: $(( $(date +%s) - started )) s wall time, $(grep -c '^test .* ok$' "$LOG") tests passed"
echo
echo "| fault | backend | outage | health said unavailable after | acknowledging again after | answers during the fault | acknowledged | lost |"
echo "|---|---|---|---|---|---|---|---|"
grep -o '| .* | [0-9]* |$' "$LOG" | sort -t'|' -k3,3 -k2,2
rm -f "$LOG"
