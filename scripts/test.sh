#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: installs what the tests
# need (Debian's promtool and chromium), starts the real test mail server, runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; else SUDO=; fi
if ! command -v promtool >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Headless Chromium for tests/html_chromium.rs (the HTML report, rendered).
if ! command -v chromium >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
scripts/testserver.sh start
cargo test "$@"
