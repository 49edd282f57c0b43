#!/usr/bin/env bash
# Installs the pinned third-party MCP peers used by membrane's end-to-end tests.
#
#   tests/peers/setup.sh [DIR]     (DIR defaults to <repo>/target/peers)
#
# Idempotent and fast when everything is already at the pinned version.
# Prints one line per peer: "<name> <version> <how to run it>".
# Layout:
#   DIR/npm/node_modules/@modelcontextprotocol/server-everything   (server, stdio)
#   DIR/npm/node_modules/@modelcontextprotocol/sdk                 (TypeScript SDK)
#   DIR/npm/node_modules/.bin/mcp-inspector                         (MCP Inspector, CLI mode)
#   DIR/npm/node_modules/.bin/componentize-js                       (builds JavaScript plugins)
#   DIR/venv/bin/python  with mcp==2.3.0                           (Python SDK)
#   DIR/venv/bin/componentize-py 0.25.1                             (builds Python plugins)
set -euo pipefail

EVERYTHING_VERSION=2026.8.31
TS_SDK_VERSION=1.32.2
INSPECTOR_VERSION=0.15.0
COMPONENTIZE_JS_VERSION=0.23.0
JCO_VERSION=1.35.0
# componentize-js imports preview2-shim without depending on it: install it beside, pinned
# (with 0.26 its splicer no longer reads the WIT directory).
PREVIEW2_SHIM_VERSION=0.25.0
PY_MCP_VERSION=2.3.0
COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:-$repo/target/peers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

for tool in node npm python3; do
    command -v "$tool" >/dev/null || { echo "setup.sh: $tool is required but not on PATH" >&2; exit 1; }
done

# Serialise concurrent runs (parallel test binaries may all call this).
exec 9>"$dir/.setup.lock"
flock 9

npm_dir="$dir/npm"
everything_pkg="$npm_dir/node_modules/@modelcontextprotocol/server-everything"
sdk_pkg="$npm_dir/node_modules/@modelcontextprotocol/sdk"
inspector_pkg="$npm_dir/node_modules/@modelcontextprotocol/inspector"
componentize_js_pkg="$npm_dir/node_modules/@bytecodealliance/componentize-js"
jco_pkg="$npm_dir/node_modules/@bytecodealliance/jco"
preview2_shim_pkg="$npm_dir/node_modules/@bytecodealliance/preview2-shim"

# Prints the "version" field of a package.json, or nothing if it is missing.
pkg_version() {
    [ -f "$1/package.json" ] || return 0
    node -e 'try { process.stdout.write(require(process.argv[1]).version || "") } catch (e) {}' "$1/package.json"
}

if [ "$(pkg_version "$everything_pkg")" != "$EVERYTHING_VERSION" ] \
    || [ "$(pkg_version "$sdk_pkg")" != "$TS_SDK_VERSION" ] \
    || [ "$(pkg_version "$inspector_pkg")" != "$INSPECTOR_VERSION" ] \
    || [ "$(pkg_version "$componentize_js_pkg")" != "$COMPONENTIZE_JS_VERSION" ] \
    || [ "$(pkg_version "$jco_pkg")" != "$JCO_VERSION" ] \
    || [ "$(pkg_version "$preview2_shim_pkg")" != "$PREVIEW2_SHIM_VERSION" ]; then
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" \
        "@modelcontextprotocol/sdk@$TS_SDK_VERSION" \
        "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" \
        "@bytecodealliance/jco@$JCO_VERSION" \
        "@bytecodealliance/preview2-shim@$PREVIEW2_SHIM_VERSION" >&2
fi
for pkg in "$everything_pkg:$EVERYTHING_VERSION" "$sdk_pkg:$TS_SDK_VERSION" "$inspector_pkg:$INSPECTOR_VERSION" \
    "$componentize_js_pkg:$COMPONENTIZE_JS_VERSION" "$jco_pkg:$JCO_VERSION" \
    "$preview2_shim_pkg:$PREVIEW2_SHIM_VERSION"; do
    got="$(pkg_version "${pkg%:*}")"
    [ "$got" = "${pkg##*:}" ] || { echo "setup.sh: ${pkg%:*} is at '$got', wanted ${pkg##*:}" >&2; exit 1; }
done

venv="$dir/venv"
# Prints the installed version of a Python package in the venv, or nothing.
py_version() {
    [ -x "$venv/bin/python" ] || return 0
    "$venv/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}
for pkg in "mcp==$PY_MCP_VERSION" "componentize-py==$COMPONENTIZE_PY_VERSION"; do
    if [ "$(py_version "${pkg%%==*}")" != "${pkg##*==}" ]; then
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$pkg" >&2
    fi
    [ "$(py_version "${pkg%%==*}")" = "${pkg##*==}" ] \
        || { echo "setup.sh: ${pkg%%==*} in $venv is at '$(py_version "${pkg%%==*}")', wanted ${pkg##*==}" >&2; exit 1; }
done

echo "server-everything $EVERYTHING_VERSION node $everything_pkg/dist/index.js stdio"
echo "typescript-sdk $TS_SDK_VERSION $sdk_pkg"
echo "componentize-js $COMPONENTIZE_JS_VERSION $npm_dir/node_modules/.bin/componentize-js"
echo "inspector $INSPECTOR_VERSION $npm_dir/node_modules/.bin/mcp-inspector --cli CMD ARGS --method tools/list"
echo "python-mcp $PY_MCP_VERSION $venv/bin/python $here/python_client.py SCENARIO -- CMD ARGS..."
echo "componentize-py $COMPONENTIZE_PY_VERSION $venv/bin/componentize-py"
