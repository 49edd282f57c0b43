#!/usr/bin/env bash
# Runs membrane under heaptrack, as a drop-in for the membrane binary of the tests and
# benchmarks: where an idle session's memory goes, by allocation site.
#
#   cargo build --release
#   SESSIONS=2000 MEMBRANE_BIN=scripts/heaptrack-membrane.sh cargo bench --bench idle_sessions
#   # once the log in $HEAPTRACK_DIR says the sessions started, end membrane with SIGKILL (its
#   # pid is in the log's file name's process), then:
#   heaptrack_print -f "$HEAPTRACK_DIR"/membrane.PID.zst --print-leaks 1
#
# What is still allocated when membrane is killed is what its sessions hold. heaptrack runs in
# a session of its own, so that the harness ending this script leaves it to finish its file.
set -euo pipefail
dir="${HEAPTRACK_DIR:-/tmp/membrane-heaptrack}"
real="${MEMBRANE_REAL_BIN:-$(dirname "$0")/../target/release/membrane}"
mkdir -p "$dir"
log="$dir/log.$$"
setsid heaptrack -o "$dir/membrane.$$" "$real" "$@" >/dev/null 2>"$log" &
# The harness reads the listening address from membrane's stderr.
for _ in $(seq 1 100); do
  grep -q 'listening on' "$log" && break
  sleep 0.1
done
grep -m1 -o 'listening on [^ ]*' "$log" >&2 || true
wait
