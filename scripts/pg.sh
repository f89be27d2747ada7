# Sourced by scripts/test.sh and scripts/bench.sh: a throwaway PostgreSQL
# cluster in a temp dir, on a free port, with trust auth. PostgreSQL refuses
# to run as root, so as root the cluster runs as the `postgres` user.
#
#   pg_start [extra postgres options]   sets PG_URL, PG_DIR, PG_BIN, PG_AS
#   pg_stop                             stops the cluster and removes it
#   pg_postmaster, pg_server_ticks      its postmaster's PID, its CPU so far

pg_find_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

pg_install() {
  echo "PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

pg_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() {
  PG_BIN=$(pg_find_bin) || { pg_install && PG_BIN=$(pg_find_bin); } || {
    echo "cannot find or install PostgreSQL (initdb, pg_ctl)" >&2
    return 1
  }
  PG_DIR=$(mktemp -d /tmp/codex-pg.XXXXXX)
  PG_AS=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" --shell /usr/sbin/nologin postgres
    chown postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  local port
  port=$(pg_free_port)
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 || {
    cat "$PG_DIR/initdb.log" >&2
    return 1
  }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 $*" start >/dev/null || {
    cat "$PG_DIR/server.log" >&2
    return 1
  }
  PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') running at $PG_URL (data in $PG_DIR)" >&2
}

# pg_postmaster: the running cluster's postmaster PID.
pg_postmaster() { head -n 1 "$PG_DIR/data/postmaster.pid"; }

# pg_server_ticks: CPU clock ticks the cluster's processes have used so far
# (the postmaster, its live children: backends, WAL writer, checkpointer,
# autovacuum; and the children it has reaped: ended backends).
pg_server_ticks() {
  local postmaster
  postmaster=$(pg_postmaster)
  { awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat"
    for pid in $(pgrep -P "$postmaster"); do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null; done
  } | awk '{s += $1} END {print s + 0}'
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
  PG_DIR=""
}

# What the test suite needs, for scripts/test.sh and scripts/faults.sh: a
# throwaway cluster (fsync off: it only lives for the tests) unless
# CODEX_TEST_DATABASE_URL names a server, its binaries for the tests that
# run clusters of their own, and, as root, CODEX_TEST_MOUNTS for the tests
# that mount a tmpfs. Without these, those tests are reported as ignored
# (see build.rs), and under CI=true that fails.
test_env() {
  if [ -z "${CODEX_TEST_DATABASE_URL:-}" ]; then
    trap pg_stop EXIT INT TERM
    pg_start -c fsync=off
    export CODEX_TEST_DATABASE_URL="$PG_URL"
    export CODEX_TEST_PG_BIN="$PG_BIN"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    export CODEX_TEST_MOUNTS=1
  fi
  if [ -z "${CODEX_TEST_CHROMIUM:-}" ]; then
    browser && export CODEX_TEST_CHROMIUM="$BROWSER_BIN"
  fi
  if [ -z "${CODEX_TEST_PROMETHEUS_PYTHON:-}" ]; then
    prometheus_parser && export CODEX_TEST_PROMETHEUS_PYTHON="$PROM_PYTHON"
  fi
}

# Debian's headless Chromium, for the status page tests: installed when
# missing. Sets BROWSER_BIN.
browser() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium not found; installing Debian's chromium package (the status page tests use it)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2 || return 1
  fi
  BROWSER_BIN="$(command -v chromium)"
}

# A Python with the Prometheus client's text parser, for the /metrics
# tests: a virtual environment under target/ (rebuilt when missing), with
# prometheus_client from PyPI. Sets PROM_PYTHON.
prometheus_parser() {
  local venv=target/prometheus-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    echo "making $venv with prometheus_client (the /metrics tests parse with it)" >&2
    python3 -m venv "$venv" >&2 || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check prometheus_client >&2 || return 1
  fi
  PROM_PYTHON="$(pwd)/$venv/bin/python"
}
