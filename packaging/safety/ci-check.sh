#!/usr/bin/env bash
# The safety profile in CI (docs/safety-profile.md): builds it from
# packaging/safety/varta-watch.toml with every path moved under a scratch
# directory, audits the binary with `strings`, runs it for real
# (crates/varta-watch/tests/safety_profile.rs), and checks that an invalid
# config file fails the build with the runtime's own message.
# Run from .ci/run after the test suite (it uses target/debug/varta-watch,
# the normal build, as the reference). Own target directory, so the normal
# release binary is never replaced by this one.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
    echo "error: safety profile: $*" >&2
    exit 1
}

if ! command -v strings >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils
fi

root=$(mktemp -d /tmp/varta-safety.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/run" "$root/log" "$root/lib"
# The sample's paths under $root; recovery touches a file the test can see.
sed -e "s#/run/varta/#$root/run/#g" \
    -e "s#/var/log/varta/#$root/log/#g" \
    -e "s#/var/lib/varta/#$root/lib/#g" \
    -e "s#^recovery-exec = .*#recovery-exec = \"/usr/bin/touch $root/recovered-{pid}\"#" \
    packaging/safety/varta-watch.toml >"$root/varta-watch.toml"
grep -q "^recovery-exec = \"/usr/bin/touch $root/" "$root/varta-watch.toml" ||
    fail "the sample has no recovery-exec line to replace"

target=target/safety-profile
build() {
    VARTA_CONFIG_FILE="$1" cargo build --release -p varta-watch \
        --no-default-features --features baked-config --target-dir "$target"
}
echo "-- build (VARTA_CONFIG_FILE=$root/varta-watch.toml)"
build "$root/varta-watch.toml"
bin="$target/release/varta-watch"
normal=target/debug/varta-watch
cargo build -p varta-watch --bin varta-watch

echo "-- strings audit of $bin"
flags=$("$normal" --help | grep -oE -- '--[a-z0-9][a-z0-9-]+' | sort -u)
[ "$(wc -l <<<"$flags")" -ge 50 ] || fail "found only $(wc -l <<<"$flags") flags in --help"
# Symbols appear mangled (`4clap7builder`, `5hyper`) or in panic paths
# (`toml_edit-0.22`): a crate name followed by a digit, `_` or `-`.
crates='(clap|hyper|toml|tokio|ureq|prometheus_client)[-_0-9]'
audit() { # $1 = binary; prints what it finds
    local text f
    # Advice for another program's command line, from varta-audit's
    # verifier (shared with the `varta audit verify` CLI, whose flag is
    # --key-file): not an argument of this binary, so dropped. Any other
    # diagnostic naming a --flag fails the audit: name the setting without
    # dashes (it is a flag and a config key alike).
    text=$(strings -a "$1" | sed -e 's/varta audit verify --key-file//g' \
        -e 's/if the file was written with --recovery-audit-key-file pass --key-file//g' \
        -e 's/it was written without --recovery-audit-key-file//g')
    for f in $flags; do
        grep -qF -- "$f" <<<"$text" && echo "flag $f"
    done
    # The name as clap's table holds it, dashes off: not even that.
    grep -qF 'threshold-ms' <<<"$text" && echo "threshold-ms"
    grep -qF 'HTTP/1.' <<<"$text" && echo "HTTP/1."
    grep -qF '/bin/sh' <<<"$text" && echo "/bin/sh"
    grep -oE "$crates" <<<"$text" | sort -u | sed 's/^/symbol /'
    return 0
}
found=$(audit "$bin")
[ -z "$found" ] || fail "the binary contains: $(tr '\n' ' ' <<<"$found")"
# The audit can see what it looks for: the normal build has all of it.
reference=$(audit "$normal")
# (clap keeps long names without dashes; messages name flags with them.)
for want in "flag --prom-token-file" "HTTP/1." "symbol clap_" "symbol hyper"; do
    grep -q -- "^$want" <<<"$reference" || fail "the audit does not find '$want' in the normal build"
done
echo "no flag names ($(wc -l <<<"$flags") checked), HTTP/1., /bin/sh, clap, hyper, toml, tokio, ureq or prometheus_client in $bin"

echo "-- run it (tests/safety_profile.rs)"
VARTA_SAFETY_BIN="$PWD/$bin" VARTA_SAFETY_ROOT="$root" \
    cargo test -p varta-watch --test safety_profile -- --ignored

echo "-- an invalid config file fails the build with the runtime's message"
printf 'control-socket = "none"\nthreshold-ms = 5\n' >"$root/bad.toml"
want=$("$normal" --config "$root/bad.toml" 2>&1 >/dev/null) && fail "the runtime accepted bad.toml"
[ "$(wc -l <<<"$want")" = 1 ] || fail "the runtime printed more than one line: $want"
if out=$(build "$root/bad.toml" 2>&1); then
    fail "the build accepted bad.toml"
fi
sed 's/^ *//' <<<"$out" | grep -qxF -- "$want" || {
    echo "$out" >&2
    fail "the build did not print the runtime's line: $want"
}
echo "build and runtime both say: $want"
