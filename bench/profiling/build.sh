#!/usr/bin/env bash
# Builds authz, mcp-gateway, devauth and mcp-floor (the load tool's floors)
# into DIR (default bin/pprof) with a net/http/pprof endpoint on
# $PPROF_LISTEN, and identity-upstream beside them. The services' sources are
# not touched: `go build -overlay` adds bench/profiling/pprof.go.in to each
# command's package main. Use with `mcpload -bin bin/pprof -pprof DIR`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/bin/pprof}
mkdir -p "$out"
overlay=$(mktemp)
trap 'rm -f "$overlay"' EXIT
src="$root/bench/profiling/pprof.go.in"
cat >"$overlay" <<JSON
{"Replace": {
  "$root/services/authz/cmd/authz/zz_pprof_overlay.go": "$src",
  "$root/services/mcp-gateway/cmd/mcp-gateway/zz_pprof_overlay.go": "$src",
  "$root/services/mcp-gateway/cmd/mcp-floor/zz_pprof_overlay.go": "$src",
  "$root/services/devauth/cmd/devauth/zz_pprof_overlay.go": "$src"
}}
JSON
cd "$root"
go build -overlay "$overlay" -o "$out/" \
	./services/authz/cmd/authz ./services/mcp-gateway/cmd/mcp-gateway ./services/devauth/cmd/devauth \
	./services/mcp-gateway/cmd/mcp-floor
# The federated scenarios start examples/identity-upstream from the same
# directory; it is built as is.
go build -o "$out/" ./examples/identity-upstream
echo "built $out/{authz,mcp-gateway,devauth,mcp-floor} with pprof on \$PPROF_LISTEN, and $out/identity-upstream"
