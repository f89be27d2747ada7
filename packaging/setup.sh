#!/bin/sh
# The part of installing Codex that is the same for the Debian package
# (postinst runs it) and the tarball (install.sh runs it): the codex user
# and group, the directories and modes, and the webhook secret made on
# first install. Idempotent: a second run changes nothing.
#
# DESTDIR: install under this root (the user and group are then not
# created; files get them only if this system has them).
# CODEX_BIN: the codex binary used for `codex gen-secret`
# (default: $DESTDIR/usr/bin/codex).
set -eu

root=${DESTDIR:-}
bin=${CODEX_BIN:-$root/usr/bin/codex}

# attrs PATH MODE OWNER GROUP: sets mode and owner only where they differ.
attrs() {
    if [ "$(stat -c %a "$1")" != "$2" ]; then chmod "$2" "$1"; fi
    if getent passwd "$3" >/dev/null && getent group "$4" >/dev/null; then
        if [ "$(stat -c %U:%G "$1")" != "$3:$4" ]; then chown "$3:$4" "$1"; fi
    fi
}

# dir PATH MODE OWNER GROUP: creates the directory if missing.
dir() {
    [ -d "$1" ] || mkdir -p "$1"
    attrs "$@"
}

if [ -z "$root" ]; then
    getent group codex >/dev/null || groupadd --system codex
    getent passwd codex >/dev/null ||
        useradd --system --gid codex --home-dir /var/lib/codex --no-create-home \
            --shell /usr/sbin/nologin --comment "Codex ticket sync" codex
elif ! getent passwd codex >/dev/null; then
    echo "note: this system has no codex user; files under $root keep root as their owner" >&2
fi

dir "$root/etc/codex" 755 root root
if [ -f "$root/etc/codex/codex.conf" ]; then
    attrs "$root/etc/codex/codex.conf" 640 root codex
fi
dir "$root/etc/codex/credentials" 700 root root
dir "$root/var/lib/codex" 750 codex codex

secret="$root/etc/codex/credentials/CODEX_WEBHOOK_SECRET"
if [ ! -s "$secret" ]; then
    (
        umask 077
        "$bin" gen-secret >"$secret.new"
        mv "$secret.new" "$secret"
    )
    attrs "$secret" 600 root root
    echo "A webhook secret was generated for Codex. Paste it into your PSA's webhook (header X-Webhook-Secret); show it with:"
    echo "  sudo cat /etc/codex/credentials/CODEX_WEBHOOK_SECRET"
else
    attrs "$secret" 600 root root
fi
