#!/usr/bin/env bash
# The packages, tested as root the way an appliance installs them (no
# systemd running needed): builds them (scripts/package.sh); dpkg -i and the
# files, owners and modes; `codex check-config` as the codex user; an
# upgrade over itself that keeps an edited codex.conf and the generated
# secret; dpkg -r (configuration and data kept), dpkg -P (configuration
# gone, data kept and named); systemd-analyze verify and security; the
# tarball's install.sh twice into a DESTDIR, the second run changing
# nothing. Leaves the machine without the package.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "package-test: needs root (dpkg -i); skipped" >&2
    exit 0
fi

# It installs and purges the package and removes /var/lib/codex: never on
# a machine that holds a real installation's data.
if [ -e /var/lib/codex ] && [ "${CI:-}" != true ]; then
    echo "package-test: /var/lib/codex exists (a real installation?); skipped" >&2
    exit 0
fi

fail() {
    echo "package-test: FAILED: $*" >&2
    exit 1
}

# expect PATH MODE OWNER:GROUP
expect() {
    local got
    got=$(stat -c '%a %U:%G' "$1") || fail "$1 is missing"
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}

if ! command -v systemd-analyze >/dev/null; then
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi

scripts/package.sh
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
deb=$(ls target/package/codex_"$version"-*_amd64.deb)
tarball=target/package/codex-$version-x86_64-linux.tar.gz
secret=/etc/codex/credentials/CODEX_WEBHOOK_SECRET

echo "== dpkg -i"
dpkg -P codex >/dev/null 2>&1 || true
rm -rf /etc/codex
out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i: $out"
grep -q "sudo cat $secret" <<<"$out" || fail "postinst did not say how to show the secret: $out"
getent passwd codex >/dev/null || fail "no codex user"
getent group codex >/dev/null || fail "no codex group"
expect /usr/bin/codex 755 root:root
expect /etc/codex 755 root:root
expect /etc/codex/codex.conf 640 root:codex
expect /etc/codex/credentials 700 root:root
expect "$secret" 600 root:root
expect /var/lib/codex 750 codex:codex
expect /lib/systemd/system/codex.service 644 root:root
expect /lib/systemd/system/codex.socket 644 root:root
[ -s /usr/share/man/man1/codex.1.gz ] || fail "no man page"
grep -qx 'connection_string = sqlite:////var/lib/codex/codex.db' /etc/codex/codex.conf ||
    fail "the installed codex.conf does not use /var/lib/codex/codex.db"
grep -qxE '[0-9a-f]{64}' "$secret" || fail "the secret is not 64 hex digits"

echo "== codex check-config as codex, with the credentials as the unit passes them"
# systemd's LoadCredential= hands the service a copy readable by its user in
# $CREDENTIALS_DIRECTORY; the same here.
creds=$(mktemp -d)
cp /etc/codex/credentials/CODEX_WEBHOOK_SECRET "$creds/"
chown -R codex "$creds"
check="CREDENTIALS_DIRECTORY=$creds codex check-config --config /etc/codex/codex.conf"
su -s /bin/sh codex -c "$check" >/dev/null 2>&1 ||
    fail "check-config as codex: $(su -s /bin/sh codex -c "$check" 2>&1 | tail -3)"
rm -rf "$creds"

echo "== systemd-analyze verify and security"
systemd-analyze verify /lib/systemd/system/codex.socket /lib/systemd/system/codex.service ||
    fail "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=yes /lib/systemd/system/codex.service |
    sed -n 's/.*Overall exposure level for codex.service: \([0-9.]*\).*/\1/p')
echo "exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || fail "exposure $exposure is above 2.0"

echo "== upgrade over itself"
generated=$(cat "$secret")
sed -i 's/^log_level = info$/log_level = debug/' /etc/codex/codex.conf
out=$(dpkg -i "$deb" 2>&1) || fail "upgrade: $out"
grep -qx 'log_level = debug' /etc/codex/codex.conf || fail "the upgrade replaced the edited codex.conf"
[ "$(cat "$secret")" = "$generated" ] || fail "the upgrade replaced the secret"
expect /etc/codex/codex.conf 640 root:codex
expect "$secret" 600 root:root

echo "== dpkg -r keeps configuration and data"
touch /var/lib/codex/codex.db
dpkg -r codex >/dev/null
[ ! -e /usr/bin/codex ] || fail "dpkg -r left /usr/bin/codex"
grep -qx 'log_level = debug' /etc/codex/codex.conf || fail "dpkg -r removed codex.conf"
[ "$(cat "$secret")" = "$generated" ] || fail "dpkg -r removed the secret"
[ -e /var/lib/codex/codex.db ] || fail "dpkg -r removed the database"

echo "== dpkg -P removes configuration, keeps and names the data"
out=$(dpkg -P codex 2>&1) || fail "dpkg -P: $out"
[ ! -e /etc/codex ] || fail "dpkg -P left /etc/codex"
[ -e /var/lib/codex/codex.db ] || fail "dpkg -P removed the database"
grep -q "/var/lib/codex" <<<"$out" || fail "dpkg -P did not say where the data is: $out"
rm -rf /var/lib/codex

echo "== install.sh twice into a DESTDIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$tarball"
dest=$work/root
DESTDIR=$dest sh "$work/codex-$version-x86_64-linux/install.sh" >/dev/null
expect "$dest/usr/bin/codex" 755 root:root
expect "$dest/etc/codex/codex.conf" 640 root:codex
expect "$dest/etc/codex/credentials/CODEX_WEBHOOK_SECRET" 600 root:root
expect "$dest/var/lib/codex" 750 codex:codex
expect "$dest/etc/systemd/system/codex.service" 644 root:root
cmp -s packaging/codex.service "$dest/etc/systemd/system/codex.service" || fail "install.sh unit differs"
# Everything that a second run could change: content, mode, owner, mtime.
snapshot() {
    find "$dest" -printf '%p %m %u:%g %T@ %s\n' | sort
    find "$dest" -type f -exec sha256sum {} + | sort
}
before=$(snapshot)
DESTDIR=$dest sh "$work/codex-$version-x86_64-linux/install.sh" >/dev/null
after=$(snapshot)
[ "$before" = "$after" ] || fail "the second install.sh changed: $(diff <(echo "$before") <(echo "$after") | head)"

echo "package-test: all passed"
