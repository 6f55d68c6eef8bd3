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
#
# Go 1.26's fuzz coordinator has a shutdown race (go.dev/issue/75804, fixed in
# Go 1.27): with a duration -fuzztime, a target can fail with a bare "context
# deadline exceeded" as the time runs out, having found nothing. A real failure
# always writes its input under testdata/fuzz/<Target>/, so a failure that
# prints that line and writes no new input is that race: the target is run
# again, up to four times, and counts as failed only if the race repeats every time
# or a run fails any other way.
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

# corpus_count prints how many inputs the target's testdata corpus holds.
corpus_count() {
	local dir=$1/testdata/fuzz/$2
	if [[ -d $dir ]]; then
		find "$dir" -type f | wc -l
	else
		echo 0
	fi
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for attempt in 1 2 3 4 5; do
		if [[ $attempt -eq 1 ]]; then
			echo "=== $name ($pkg)"
		else
			echo "=== $name ($pkg), attempt $attempt"
		fi
		before=$(corpus_count "$dir" "$name")
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "${parallel[@]}" "$pkg" 2>&1 | tee "$log"; then
			break
		fi
		after=$(corpus_count "$dir" "$name")
		if [[ $after -eq $before ]] && grep -qx '[[:space:]]*context deadline exceeded' "$log"; then
			if [[ $attempt -lt 5 ]]; then
				echo "fuzz: $name stopped with go.dev/issue/75804 (no input found); running it again" >&2
				continue
			fi
		fi
		failed+=("$name ($pkg)")
		break
	done
done

if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	echo "fuzz: failing inputs are under each package's testdata/fuzz/" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"
