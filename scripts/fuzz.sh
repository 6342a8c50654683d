#!/usr/bin/env bash
# Fuzz every parser of server input for a bounded time each.
#
#   scripts/fuzz.sh                 # every target, 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh smtp_reply verifier
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz needs nightly
# features (-Z sanitizer); on the stable toolchain this script sets
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept them (for fuzzing only).
# Seeds live in fuzz/seeds/<target>/ (kept in the repository, a few per
# target); the growing working corpus goes to fuzz/corpus/<target>/ (ignored)
# and crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(smtp_reply pop3_parse pop3_session imap_parse verifier)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 3
fi
export RUSTC_BOOTSTRAP=1

failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: ${seconds}s"
    if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10; then
        echo "!! $t found a crash: see fuzz/artifacts/$t/" >&2
        failed=1
    fi
done
exit $failed
