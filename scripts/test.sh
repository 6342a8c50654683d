#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: installs what the tests need
# (Debian's promtool, chromium, node and npm; the dashboard schema check's npm
# packages), starts the real test mail server and the interop servers (Exim + GNU
# Mailutils), runs cargo test.
# The tests write into the test server's Maildirs, so they run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "scripts/test.sh: run as root (sudo is not installed)" >&2; exit 1; }
  exec sudo --preserve-env env "PATH=$PATH" "$0" "$@"
fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)   # promtool, for the Prometheus report test
command -v chromium >/dev/null || missing+=(chromium)     # tests/html_chromium.rs
[ -x /usr/bin/time ] || missing+=(time)                   # peak memory in tests/hostile.rs
command -v node >/dev/null || missing+=(nodejs)           # tests/contrib_prometheus.rs: dashboard schema check
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The dashboard schema check's packages, pinned by its package-lock.json.
[ -d contrib/grafana/schema-check/node_modules/@grafana/schema ] || npm ci --prefix contrib/grafana/schema-check --no-audit --no-fund >/dev/null
scripts/testserver.sh start
# Exim + GNU Mailutils for tests/interop.rs (installs them on first use).
scripts/interop.sh start
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
