#!/usr/bin/env bash
# The whole patch set of the vendored tiny_http in one place: downloads the
# upstream 0.12.0 release from crates.io, checks it against the checksum the
# registry's index publishes for it, and prints `diff -ruN upstream vendor`
# (every file, removed ones included). vendor/tiny_http/PATCHES.md says why
# each change was made.
#
#   scripts/vendor-diff.sh          the whole diff
#   scripts/vendor-diff.sh --stat   lines added and removed per file
#
# Needs curl, tar and diff. Exits 0 whether or not the trees differ (they
# do); non-zero if the download or the checksum fails.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.12.0
URL="https://static.crates.io/crates/tiny_http/tiny_http-$VERSION.crate"
# The "cksum" of tiny_http 0.12.0 in https://index.crates.io/ti/ny/tiny_http,
# the same as Cargo.lock's before the crate was vendored.
SHA256=389915df6413a2e74fb181895f933386023c71110878cd0825588928e64cdc82

mode=diff
case "${1:-}" in
  "") ;;
  --stat) mode=stat ;;
  *) echo "usage: $0 [--stat]" >&2; exit 2 ;;
esac

work=$(mktemp -d /tmp/codex-vendor-diff.XXXXXX)
trap 'rm -rf "$work"' EXIT

curl -fsSL --retry 2 -o "$work/tiny_http.crate" "$URL"
echo "$SHA256  $work/tiny_http.crate" | sha256sum --check --quiet
tar -xzf "$work/tiny_http.crate" -C "$work"
mkdir -p "$work/a" "$work/b"
mv "$work/tiny_http-$VERSION" "$work/a/tiny_http"
cp -R vendor/tiny_http "$work/b/tiny_http"

echo "# vendor/tiny_http against tiny_http $VERSION ($URL, sha256 $SHA256)"
echo "# a/ is upstream, b/ is vendor/tiny_http as checked out; why: vendor/tiny_http/PATCHES.md"
cd "$work"
status=0
diff -ruN a/tiny_http b/tiny_http >"$work/patch.diff" || status=$?
# diff exits 1 when the trees differ, which is expected; 2 is trouble.
if [ "$status" -gt 1 ]; then
  echo "diff failed (exit $status)" >&2
  exit 1
fi
if [ "$mode" = diff ]; then
  cat "$work/patch.diff"
else
  awk '
    /^\+\+\+ / { file = substr($2, 3); next }
    /^--- / { next }
    /^\+/ { added[file]++; if (!(file in seen)) { seen[file] = 1; order[++n] = file } }
    /^-/ { removed[file]++; if (!(file in seen)) { seen[file] = 1; order[++n] = file } }
    END {
      for (i = 1; i <= n; i++) {
        f = order[i]
        printf "%-48s +%-5d -%d\n", f, added[f], removed[f]
        ta += added[f]; tr += removed[f]
      }
      printf "%d files changed, +%d, -%d\n", n, ta, tr
    }' "$work/patch.diff"
fi
