#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the wasm32-wasip2 target, redis-server,
# nginx, chromium and chromium-driver, and the pinned third-party MCP peers (npm, PyPI), builds the plugins, then runs the plugins' unit tests,
# membrane's unit and end-to-end tests (one release build), and each fuzz target for 30 s
# (scripts/fuzz.sh installs the nightly toolchain and cargo-fuzz; FUZZ_SECONDS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
# Real services the tests start on their own ports (Debian packages): redis-server for durable
# sessions, nginx as the load balancer in front of replicas, and a headless Chromium driven over
# WebDriver for the admin console.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export MEMBRANE_PEERS_DIR="${MEMBRANE_PEERS_DIR:-$PWD/target/peers}"
export MEMBRANE_PLUGINS_TARGET_DIR="${MEMBRANE_PLUGINS_TARGET_DIR:-$PWD/plugins/target}"
bash tests/peers/setup.sh "$MEMBRANE_PEERS_DIR"

bash scripts/build-plugins.sh >/dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
{
  cargo test --no-fail-fast --manifest-path plugins/Cargo.toml --target-dir "$MEMBRANE_PLUGINS_TARGET_DIR"
  rust_plugins=$?
  node --test plugins/js/
  plugins=$((rust_plugins || $?))
  cargo test --no-fail-fast --release
  membrane=$?
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
  fuzz=$?
  exit $((plugins || membrane || fuzz))
} 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo ends with the doc-test runner's own count). The
# servers under test share stderr with the harness, so counts are found wherever they stand.
{ grep -oE '[0-9]+ passed; [0-9]+ failed' "$log" || true; } |
  awk '{ passed += $1; failed += $3 } END { printf "%d passed, %d failed\n", passed, failed }'
exit "$status"
