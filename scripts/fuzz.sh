#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the workspace for a bounded time each.
#
#   scripts/fuzz.sh                              # every module, FUZZTIME=5s per target
#   FUZZTIME=1m scripts/fuzz.sh                  # longer runs
#   scripts/fuzz.sh ./services/authz/...         # only these packages
#
# Targets are discovered, never listed by hand: each package whose test files
# declare a func Fuzz... is asked with `go test -list '^Fuzz'`, and each target
# it names is fuzzed on its own (go test -fuzz takes one target at a time).
# FUZZPARALLEL sets the fuzzing workers per target (go test -parallel; Go's
# default is GOMAXPROCS).
#
# A failing input is written by Go to the package's testdata/fuzz/<Target>/;
# commit it with the fix, so plain `go test` replays it as a seed from then on.
# The script runs every target even after a failure, then exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-5s}
parallel=()
if [[ -n ${FUZZPARALLEL:-} ]]; then
	parallel=(-parallel "$FUZZPARALLEL")
fi

if [[ $# -gt 0 ]]; then
	patterns=("$@")
else
	# A go.work root has no module of its own, so ./... matches nothing there.
	mapfile -t patterns < <(go list -m -f '{{.Dir}}/...')
fi

targets=()
while read -r pkg dir; do
	[[ -n $pkg ]] || continue
	grep -qs '^func Fuzz' "$dir"/*_test.go || continue
	while read -r name; do
		[[ $name == Fuzz* ]] && targets+=("$pkg $name")
	done < <(go test -list '^Fuzz' "$pkg")
done < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "${patterns[@]}")

if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz: no fuzz targets found in ${patterns[*]}" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${fuzztime} each"

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "=== $name ($pkg)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "${parallel[@]}" "$pkg"; then
		failed+=("$name ($pkg)")
	fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	echo "fuzz: failing inputs are under each package's testdata/fuzz/" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"
