#!/usr/bin/env bash
# Runs membrane's fuzz targets (fuzz/): each for SECONDS (default 30), or for RUNS executions
# with --runs RUNS, seeded from the corpus kept in fuzz/corpus/<target>. New inputs go to a
# scratch directory, so the repository's corpus changes only by hand (`cargo fuzz cmin`).
# Installs what it needs: the nightly toolchain and cargo-fuzz. Build output goes to
# $MEMBRANE_FUZZ_TARGET_DIR (default fuzz/target).
#
#   scripts/fuzz.sh [SECONDS] [--runs RUNS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
runs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        [0-9]*) seconds="$1"; shift ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(framing envelope sse config http_front)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
target_dir="${MEMBRANE_FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
cargo +nightly fuzz build --target-dir "$target_dir"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
passed=0
failed=0
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "fuzz/corpus/$target"
    if [ -n "$runs" ]; then limit="-runs=$runs"; else limit="-max_total_time=$seconds"; fi
    log="$scratch/$target.log"
    # -rss_limit_mb and -malloc_limit_mb make unbounded allocation a failure.
    if cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$scratch/$target" "fuzz/corpus/$target" \
        -- "$limit" -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        executed=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
        rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo "?")
        peak=$(grep -oE 'stat::peak_rss_mb: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
        echo "fuzz $target: $executed executions, $rate/s, peak RSS ${peak} MB, no crash"
    else
        failed=$((failed + 1))
        echo "fuzz $target: FAILED"
        tail -n 40 "$log"
    fi
done
echo "test result: fuzz. $passed passed; $failed failed"
[ "$failed" -eq 0 ]
