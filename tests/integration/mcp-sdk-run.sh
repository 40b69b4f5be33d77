#!/bin/sh
# Runs mcp-sdk.test.mjs (node's test runner) for meson. Skips (77) when node
# or the npm packages are missing: `npm ci --no-audit --no-fund` here first.
# The sandbox scenarios skip themselves unless CLEANROOM_TEST_VM=1.
here=$(dirname "$0")
command -v node >/dev/null 2>&1 || { echo "mcp-sdk: skipped (no node)"; exit 77; }
[ -d "$here/node_modules/@modelcontextprotocol/sdk" ] || {
  echo "mcp-sdk: skipped (run 'npm ci --no-audit --no-fund' in tests/integration)"; exit 77; }
exec node --test --test-timeout=1200000 "$here/mcp-sdk.test.mjs"
