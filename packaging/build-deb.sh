#!/usr/bin/env bash
# Builds the Debian package `varta` (both binaries, hardened unit, conffile,
# sysusers/tmpfiles entries, man pages, completions) into
# ${CARGO_TARGET_DIR:-target}/debian/. Needs cargo-deb
# (`cargo install cargo-deb --locked`, the version .ci/run pins).
# Prints the path of the .deb as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p varta-watch -p varta-cli

target="${CARGO_TARGET_DIR:-target}"
extra="$target/release/varta-deb"
rm -rf "$extra"
mkdir -p "$extra/man" "$extra/completions"

# varta's man pages (varta.1, varta-status.1, ...), gzipped as Debian wants.
"$target/release/varta" man --out "$extra/man" >/dev/null
gzip -9n "$extra/man"/*.1
"$target/release/varta" completions bash >"$extra/completions/varta"
"$target/release/varta" completions zsh >"$extra/completions/_varta"
"$target/release/varta" completions fish >"$extra/completions/varta.fish"

cargo deb -p varta-watch --no-build --output "$target/debian/" >/dev/null
ls -t "$target"/debian/varta_*.deb | head -n 1
