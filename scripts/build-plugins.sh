#!/usr/bin/env bash
# Builds every shipped plugin, in every language, into plugins/dist/NAME.wasm:
#   Rust        the crates of plugins/ (one cargo workspace), for wasm32-wasip2
#   Python      plugins/python/NAME/app.py, with componentize-py
#   JavaScript  plugins/js/NAME/plugin.js, with componentize-js
# with the pinned toolchains tests/peers/setup.sh installs. A plugin whose sources import
# session-kv is built for the `stateful-interceptor` world, any other for `interceptor`.
# Cached: cargo's own build (in $MEMBRANE_PLUGINS_TARGET_DIR, or plugins/target), and a Python
# or JavaScript component is built again only when its sources or the contract change.
#
#   bash scripts/build-plugins.sh       # prints the path of each plugin it provides
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
peers="${MEMBRANE_PEERS_DIR:-$repo/target/peers}"
target="${MEMBRANE_PLUGINS_TARGET_DIR:-$repo/plugins/target}"
dist="$repo/plugins/dist"
mkdir -p "$dist"
# The test binaries call this in parallel: one build at a time.
exec 8>"$dist/.lock"
flock 8

rustup target add wasm32-wasip2 >/dev/null 2>&1
bash tests/peers/setup.sh "$peers" >/dev/null

cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml --target-dir "$target"
for built in "$target"/wasm32-wasip2/release/*.wasm; do
    cmp -s "$built" "$dist/${built##*/}" || cp "$built" "$dist/"
    echo "$dist/${built##*/}"
done

# world FILES...: the contract world a plugin with these sources needs.
world() {
    if grep -qE 'session[-_]kv' "$@"; then echo stateful-interceptor; else echo interceptor; fi
}

# fresh NAME FILES...: whether plugins/dist/NAME.wasm was built from these very sources.
fresh() {
    local name="$1"
    shift
    local hash
    hash="$(cat "$@" wit/interceptor.wit | sha256sum | cut -d' ' -f1)"
    stamp="$dist/.$name.sha256"
    if [ -f "$dist/$name.wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
        return 0
    fi
    echo "$hash" >"$stamp.next"
    return 1
}

for source in plugins/python/*/; do
    [ -f "$source/app.py" ] || continue
    name="$(basename "$source")"
    name="${name//-/_}"
    if ! fresh "$name" "$source"*.py; then
        "$peers/venv/bin/componentize-py" --wit-path wit --world "$(world "$source"*.py)" \
            componentize app --python-path "$source" --output "$dist/$name.wasm.partial" >/dev/null
        mv "$dist/$name.wasm.partial" "$dist/$name.wasm"
        mv "$dist/.$name.sha256.next" "$dist/.$name.sha256"
    fi
    echo "$dist/$name.wasm"
done

for source in plugins/js/*/; do
    [ -f "$source/plugin.js" ] || continue
    name="$(basename "$source")"
    name="${name//-/_}"
    if ! fresh "$name" "$source"*.js; then
        # No WASI HTTP: membrane does not provide it.
        "$peers/npm/node_modules/.bin/componentize-js" "$source/plugin.js" --wit wit \
            --world-name "$(world "$source"*.js)" --disable http fetch-event \
            -o "$dist/$name.wasm.partial" >/dev/null
        mv "$dist/$name.wasm.partial" "$dist/$name.wasm"
        mv "$dist/.$name.sha256.next" "$dist/.$name.sha256"
    fi
    echo "$dist/$name.wasm"
done
