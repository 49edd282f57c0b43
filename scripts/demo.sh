#!/usr/bin/env bash
# The main job, from a fresh machine: membrane with the bundled tool-guard plugin in front of the
# reference MCP server (@modelcontextprotocol/server-everything), driven by the rmcp SDK client
# in examples/demo.rs: it lists the tools (the guarded ones are hidden), makes an allowed call
# and a blocked one.
set -euo pipefail
cd "$(dirname "$0")/.."

export MEMBRANE_PEERS_DIR="${MEMBRANE_PEERS_DIR:-$PWD/target/peers}"
bash tests/peers/setup.sh "$MEMBRANE_PEERS_DIR" >&2
bash scripts/build-plugins.sh >/dev/null
cargo build --release --bin membrane --example demo
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/demo" \
  "$target_dir/release/membrane" examples/guard.toml \
  node "$MEMBRANE_PEERS_DIR/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js" stdio
