#!/bin/sh
# Installs Codex from this tarball with the same user, directories, modes
# and webhook secret as the Debian package. Run as root from the unpacked
# tarball; DESTDIR installs under another root. Idempotent: a second run
# changes nothing, and an existing /etc/codex/codex.conf is kept.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}

# put SRC DST MODE: copies only when the content differs.
put() {
    mkdir -p "$(dirname "$2")"
    if ! cmp -s "$1" "$2"; then
        install -m "$3" "$1" "$2"
    elif [ "$(stat -c %a "$2")" != "$3" ]; then
        chmod "$3" "$2"
    fi
}

put "$here/codex" "$root/usr/bin/codex" 755
put "$here/codex.service" "$root/etc/systemd/system/codex.service" 644
put "$here/codex.socket" "$root/etc/systemd/system/codex.socket" 644
put "$here/codex.conf.example" "$root/usr/share/doc/codex/codex.conf.example" 644
for page in "$here"/man/*.1.gz; do
    put "$page" "$root/usr/share/man/man1/$(basename "$page")" 644
done
if [ ! -e "$root/etc/codex/codex.conf" ]; then
    mkdir -p "$root/etc/codex"
    install -m 640 "$here/codex.conf" "$root/etc/codex/codex.conf"
fi

DESTDIR=$root CODEX_BIN="$here/codex" sh "$here/setup.sh"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "Start Codex with: systemctl enable --now codex.socket codex.service"
fi
