#!/usr/bin/env bash
# Builds cr-sqlite's loadable extension (the peer of the sync benchmark) from the npm package's
# sources into bench/peers/out/crsqlite.so. Needs: npm, a Rust toolchain, gcc, libclang
# (Debian: apt-get install libclang-dev). Nothing is downloaded except from npm and crates.io.
#
# The package pins a 2023 nightly toolchain; it builds on stable with RUSTC_BOOTSTRAP=1 once
# one feature attribute that Rust removed (and the code no longer uses) is dropped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
version="${CRSQLITE_VERSION:-0.16.3}"
if [ -f "$out/crsqlite.so" ]; then
    echo "$out/crsqlite.so already built"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "@vlcn.io/crsqlite@$version" >/dev/null
tar xzf vlcn.io-crsqlite-*.tgz
cd package
sed -i 's/^#!\[feature(concat_idents)\]//' rs/sqlite-rs-embedded/sqlite3_capi/src/lib.rs
RUSTUP_TOOLCHAIN=stable RUSTC_BOOTSTRAP=1 make loadable >build.log 2>&1 || { tail -30 build.log; exit 1; }
mkdir -p "$out"
cp dist/crsqlite.so "$out/crsqlite.so"
echo "built $out/crsqlite.so (cr-sqlite $version)"
