#!/usr/bin/env bash
# The test command: formatting, lints, and the whole suite against both
# backends (SQLite, and PostgreSQL: a throwaway cluster unless
# CODEX_TEST_DATABASE_URL names a server). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if [ -z "${CODEX_TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/pg.sh
  . scripts/pg.sh
  trap pg_stop EXIT INT TERM
  # fsync off: this cluster only lives for the tests (the benchmark keeps it on).
  pg_start -c fsync=off
  export CODEX_TEST_DATABASE_URL="$PG_URL"
  # The PostgreSQL outage test runs clusters of its own with these binaries.
  export CODEX_TEST_PG_BIN="$PG_BIN"
fi

# The disk-full and read-only tests mount small tmpfs filesystems: as root
# only. Without it they are reported as ignored (and fail under CI=true).
if [ "$(id -u)" -eq 0 ]; then
  export CODEX_TEST_MOUNTS=1
fi

echo "== cargo test (SQLite and PostgreSQL at ${CODEX_TEST_DATABASE_URL})"
cargo test --workspace --quiet "$@"
