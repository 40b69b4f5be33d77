#!/bin/sh
# Runs mcp-sdk.test.mjs (node's test runner) for meson. Skips (77) when node
# or the npm packages are missing: `npm install --no-audit --no-fund` here
# first (it installs the versions pinned in package-lock.json; `npm ci` refuses
# this lock because vite, under the Inspector, names an optional dependency
# that the registry does not have).
# The sandbox scenarios skip themselves unless CLEANROOM_TEST_VM=1.
here=$(dirname "$0")
command -v node >/dev/null 2>&1 || { echo "mcp-sdk: skipped (no node)"; exit 77; }
for p in sdk client inspector; do
  [ -d "$here/node_modules/@modelcontextprotocol/$p" ] || {
    echo "mcp-sdk: skipped (@modelcontextprotocol/$p missing: run 'npm install --no-audit --no-fund' in tests/integration)"
    exit 77; }
done
exec node --test --test-timeout=1200000 "$here/mcp-sdk.test.mjs"
