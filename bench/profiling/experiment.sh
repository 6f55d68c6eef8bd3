#!/usr/bin/env bash
# Builds the stack into bin/x-NAME with one experiment applied (each is described in
# bench/results/2026-11-30-make-bench/README.md, "What would close the gaps"), without
# touching the services' sources: the patch is applied
# to a copy of the file, which `go build -overlay` then substitutes.
#
#   bench/profiling/experiment.sh gateway-header-fast-path
#   bin/mcpload -bin bin/x-gateway-header-fast-path -scenarios warm -clients 4,32
#
# Experiments: the *.patch files in bench/profiling/experiments/. A patch that no longer
# applies means the code moved on; the experiment must be redone by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
name=${1:?usage: experiment.sh NAME (see bench/profiling/experiments/)}
patchfile="$root/bench/profiling/experiments/$name.patch"
[ -f "$patchfile" ] || { echo "no experiment $name" >&2; exit 1; }
target=$(sed -n '1s/^--- \([^[:space:]]*\).*/\1/p' "$patchfile")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/$target" "$work/file.go"
patch --quiet "$work/file.go" "$patchfile"
printf '{"Replace": {"%s": "%s"}}\n' "$root/$target" "$work/file.go" >"$work/overlay.json"
out="$root/bin/x-$name"
mkdir -p "$out"
cd "$root"
go build -overlay "$work/overlay.json" -o "$out/" \
	./services/authz/cmd/authz ./services/mcp-gateway/cmd/mcp-gateway ./services/devauth/cmd/devauth
echo "built $out with $target patched ($name)"
