# Sourced by the bench scripts: what they share.
#
#   BENCH_SECRET                           the X-Webhook-Secret wrk sends
#   bench_port                             prints a free local port
#   bench_config <file> <port> <url>       a Codex config for a bench: webhooks
#                                          on from 127.0.0.1 with every check,
#                                          a rate limit too high to refuse,
#                                          polling off, THREADS if set
#   bench_wait_healthy <port>              waits up to 10 s for /webhooks/health
#   bench_install <command> <package>      installs a Debian package if missing

BENCH_SECRET=Bch6Rt3Yu8Io1Pa5Sd9Fg2Hj7Kl4Zx0Cv

bench_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bench_config() {
  cat >"$1" <<CONF
[server]
bind = 127.0.0.1:$2
${THREADS:+threads = $THREADS}
[database]
connection_string = $3
[webhooks]
enabled = true
secret = $BENCH_SECRET
allowed_ips = 127.0.0.1/32
rate_limit_per_minute = 100000000
[scheduler]
sync_tickets_enabled = false
CONF
}

bench_wait_healthy() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/webhooks/health" && return 0
    sleep 0.1
  done
  return 1
}

bench_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $1 (Debian package $2)" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
}
