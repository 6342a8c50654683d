#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: installs what the tests need
# (Debian's promtool and chromium), starts the real test mail server, runs cargo test.
# The tests write into the test server's Maildirs, so they run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "scripts/test.sh: run as root (sudo is not installed)" >&2; exit 1; }
  exec sudo --preserve-env env "PATH=$PATH" "$0" "$@"
fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)   # promtool, for tests/promtool.rs
command -v chromium >/dev/null || missing+=(chromium)     # tests/html_chromium.rs
[ -x /usr/bin/time ] || missing+=(time)                   # peak memory in tests/hostile.rs
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/testserver.sh start
cargo test "$@"
