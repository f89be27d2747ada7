#!/usr/bin/env bash
# Builds the Debian package and the tarball for appliances that are not
# Debian, into target/package:
#   codex_<version>-1_amd64.deb          (cargo-deb, metadata in Cargo.toml)
#   codex-<version>-x86_64-linux.tar.gz  (binary, units, configuration,
#                                         man pages, install.sh)
# Installs cargo-deb first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/package
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked
fi

echo "== cargo build --release"
cargo build --release --locked --quiet
rm -rf "$out"
mkdir -p "$out/man"
target/release/codex man-pages "$out/man"
gzip -9n "$out"/man/*.1
# The configuration an installed service uses: the example, with the
# database in the state directory and webhooks on (postinst generates their
# secret, which the unit passes as a credential).
sed -e 's|^connection_string = sqlite:///codex.db$|connection_string = sqlite:////var/lib/codex/codex.db|' \
    -e '/^\[webhooks\]$/,/^\[/ s|^enabled = false$|enabled = true|' \
    codex.conf.example >"$out/codex.conf"
grep -q '^connection_string = sqlite:////var/lib/codex/codex.db$' "$out/codex.conf"
sed -n '/^\[webhooks\]$/,/^\[/p' "$out/codex.conf" | grep -qx 'enabled = true'

echo "== cargo deb"
cargo deb --no-build --no-strip --output "$out/" >/dev/null

echo "== tarball"
name="codex-$version-x86_64-linux"
stage="$out/$name"
mkdir -p "$stage/man"
cp target/release/codex packaging/codex.service packaging/codex.socket \
    packaging/setup.sh packaging/install.sh codex.conf.example "$out/codex.conf" "$stage/"
cp "$out"/man/*.1.gz "$stage/man/"
tar -C "$out" --owner=0 --group=0 -czf "$out/$name.tar.gz" "$name"
rm -rf "$stage"

ls -1 "$out"/*.deb "$out/$name.tar.gz"
