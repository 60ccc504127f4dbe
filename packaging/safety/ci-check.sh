#!/usr/bin/env bash
# The safety profile in CI (docs/safety-profile.md): builds it from
# packaging/safety/varta-watch.toml with every path moved under a scratch
# directory, audits the binary with `strings`, runs it for real
# (crates/varta-watch/tests/safety_profile.rs, with a fault-injection
# build of the same config for its watchdog test), checks that a baked
# hw-watchdog is opened and checked like the flag, and that an invalid
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
# A secure-UDP key for the test's network agent, written by `varta keygen`
# (the operator's tool); read at build time to validate the file.
cargo build -p varta-cli --bin varta
target/debug/varta keygen "$root/udp.key"
# The sample's paths under $root; recovery touches a file the test can
# see. Top-level keys the test needs go first (a key after the sample's
# [[agent]] tables would belong to the last one); its rules go last.
{
    cat <<EOF
udp-port = 0
udp-bind-addr = "127.0.0.1"
key-file = "$root/udp.key"
secure-udp-i-accept-recovery-on-unauthenticated-transport = true
EOF
    sed -e "s#/run/varta/#$root/run/#g" \
        -e "s#/var/log/varta/#$root/log/#g" \
        -e "s#/var/lib/varta/#$root/lib/#g" \
        -e "s#^recovery-exec = \"/usr/bin/logger.*#recovery-exec = \"/usr/bin/touch $root/recovered-{pid}\"#" \
        packaging/safety/varta-watch.toml
    cat <<'EOF'

# tests/safety_profile.rs: the test binary's agents, and network agents
# (named peer:IP, the identity of a network agent).
[[agent]]
match = { comm = "safety_profile*" }
name = "pump"
threshold-ms = 900
[[agent]]
match = { origin = "network_verified", peer = "127.0.0.0/8" }
threshold-ms = 700
[[agent]]
match = { name = "pump" }
required = true
startup-grace-ms = 500
[[agent]]
match = { name = "peer:127.0.0.1" }
required = true
startup-grace-ms = 500
EOF
} >"$root/varta-watch.toml"
grep -q "^recovery-exec = \"/usr/bin/touch $root/" "$root/varta-watch.toml" ||
    fail "the sample has no recovery-exec line to replace"

target=target/safety-profile
build() { # $1 = config file; more cargo arguments may follow
    local file=$1
    shift
    VARTA_CONFIG_FILE="$file" cargo build -p varta-watch \
        --no-default-features --features baked-config --target-dir "$target" "$@"
}
echo "-- build (VARTA_CONFIG_FILE=$root/varta-watch.toml)"
build "$root/varta-watch.toml" --release
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
    # The baked paths (all under $root, the config file's own name
    # included: it is logged at start) are data, not code: dropped too.
    text=$(strings -a "$1" | sed -e "s#$root/[A-Za-z0-9._/{}-]*##g" \
        -e 's/varta audit verify --key-file//g' \
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

echo "-- the same configuration with feature fault-injection (a debug build, for the watchdog test)"
build "$root/varta-watch.toml" --features fault-injection
cp "$target/debug/varta-watch" "$root/varta-watch-faults"
# The literals build the very Config build.rs loaded (rules, UDP, recovery…):
# that build compares the Debug of both.
VARTA_FAULT_CHECK_BAKED=1 "$root/varta-watch-faults" ||
    fail "the compiled-in configuration differs from the loaded file"

echo "-- run it (tests/safety_profile.rs)"
VARTA_SAFETY_BIN="$PWD/$bin" VARTA_SAFETY_FAULT_BIN="$root/varta-watch-faults" \
    VARTA_SAFETY_ROOT="$root" \
    cargo test -p varta-watch --test safety_profile -- --ignored --test-threads 1

echo "-- a baked hw-watchdog reaches the device checks (no watchdog device here: /dev/null is refused)"
{
    echo 'hw-watchdog = "/dev/null"'
    cat "$root/varta-watch.toml"
} >"$root/hw.toml"
build "$root/hw.toml" --features fault-injection
want=$("$normal" --socket "$root/run/hw.sock" --hw-watchdog /dev/null 2>&1 >/dev/null) &&
    fail "the normal build accepted --hw-watchdog /dev/null"
grep -q "not a watchdog device" <<<"$want" || fail "unexpected refusal: $want"
status=0
got=$("$target/debug/varta-watch" 2>&1 >/dev/null) || status=$?
[ "$status" = 1 ] || fail "the profile with hw-watchdog = /dev/null exited $status: $got"
# (Log lines before it — the profile's audit file is opened first.)
[ "$(tail -n1 <<<"$got")" = "$want" ] || fail "the profile said '$got', the normal build '$want'"
echo "both refuse it with: $want"

echo "-- baked-config with the default features is refused by name"
if out=$(VARTA_CONFIG_FILE="$root/varta-watch.toml" cargo check -p varta-watch \
    --features baked-config --target-dir "$target" 2>&1); then
    fail "baked-config built together with runtime-config, http and alerting"
fi
for feature in runtime-config http alerting; do
    grep -qF "feature \`baked-config\` cannot be combined with \`$feature\`" <<<"$out" || {
        echo "$out" >&2
        fail "no compile_error naming $feature"
    }
done
echo "compile_error! names runtime-config, http and alerting"

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
