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

# The resource tests (tests/resources.rs) run against the release binary.
echo "== cargo build --release"
cargo build --release --quiet
export CODEX_TEST_RELEASE_BIN="$PWD/target/release/codex"

# shellcheck source=scripts/pg.sh
. scripts/pg.sh
test_env

echo "== cargo test (SQLite and PostgreSQL at ${CODEX_TEST_DATABASE_URL})"
cargo test --workspace --quiet "$@"

# The Debian package and the tarball (as root, as in CI; skipped otherwise).
echo "== scripts/package-test.sh"
scripts/package-test.sh
