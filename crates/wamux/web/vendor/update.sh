#!/usr/bin/env bash
# Refreshes the vendored Socket.IO client that the web UI loads from the binary.
# The version comes from the UI tests' lock file, so the browser and the tests
# use the same client. Run after bumping socket.io-client there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tests="$here/../../tests/ui"
(cd "$tests" && npm ci --no-audit --no-fund)
dist="$tests/node_modules/socket.io-client/dist"
cp "$dist/socket.io.esm.min.js" "$here/socket.io.esm.min.js"
version="$(node -p "require('$tests/node_modules/socket.io-client/package.json').version")"
echo "$version" > "$here/socket.io-client.version"
echo "vendored socket.io-client $version"
