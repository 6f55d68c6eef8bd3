#!/usr/bin/env bash
# proto-breaking.sh runs `buf breaking` over the history of proto/: every commit
# among the last PROTO_BREAKING_DEPTH (default 100) that changed proto/ is checked
# against its first parent, so a breaking change anywhere in a batch of commits
# fails, not only one in the last commit. Uncommitted changes to proto/ are
# checked against HEAD as well.
#
#   scripts/proto-breaking.sh                         # what `make proto-breaking` and CI run
#   PROTO_BREAKING_DEPTH=500 scripts/proto-breaking.sh
#   BUF=bin/tools/buf scripts/proto-breaking.sh       # the buf binary (default: bin/tools/buf)
#
# It runs in the repository it is started in (the current directory's), so a test
# can point it at a scratch repository.
#
# Each side is exported from Git (`git archive` of buf.yaml and proto/) into a
# temporary directory, so it works the same in a fresh clone, a worktree or a
# clone whose history is shorter than the depth: a commit whose parent is not in
# the clone (the edge of a shallow clone) is reported and skipped, and so is the
# commit that created proto/, which has nothing to break.
#
# A deliberate breaking change (agreed with every caller, or in a package not yet
# released) is let through by a line in its commit message:
#
#   Proto-Breaking: allowed, <why>
#
# Without that escape a breaking commit would fail every run until it left the
# window.
set -euo pipefail

buf=${BUF:-bin/tools/buf}
depth=${PROTO_BREAKING_DEPTH:-100}
[[ $depth =~ ^[1-9][0-9]*$ ]] || { echo "proto-breaking: PROTO_BREAKING_DEPTH=$depth: want a positive number of commits" >&2; exit 2; }
[[ -x $buf ]] || { echo "proto-breaking: BUF=$buf is not an executable (run 'make tools')" >&2; exit 2; }
buf=$(cd "$(dirname "$buf")" && pwd)/$(basename "$buf")
cd "$(git rev-parse --show-toplevel)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# export REV DIR: buf.yaml and proto/ as of REV; fails when REV has no proto/.
export_tree() {
	mkdir -p "$2"
	git archive --format=tar "$1" -- buf.yaml proto 2>/dev/null | tar -x -C "$2"
}

# check NAME DIR AGAINST: buf breaking of DIR against AGAINST, violations on stdout.
check() {
	if ! out=$("$buf" breaking "$2" --against "$3" --error-format text 2>&1); then
		echo "proto-breaking: $1 breaks the API it was built on:" >&2
		# Name files as in the repository, not by their temporary copy.
		sed -e "s|$2/||" -e 's/^/  /' <<<"$out" >&2
		return 1
	fi
}

status=0
checked=0
# The commits that changed proto/ or buf.yaml, each against its first parent.
# diff-tree lists only commits that have a parent here: a root commit, or one at
# the edge of a shallow clone, is not among them.
changed=$(git rev-list --max-count="$depth" HEAD |
	git diff-tree --stdin -m --first-parent -r --name-only -- proto buf.yaml |
	grep -E '^[0-9a-f]{40}$' | uniq || true)
for c in $changed; do
	parent=$(git rev-parse "$c^1")
	subject=$(git log -1 --format='%h %s' "$c")
	if ! git cat-file -e "$parent:proto" 2>/dev/null; then
		continue # proto/ starts here
	fi
	if git log -1 --format=%B "$c" | grep -qiE '^Proto-Breaking:[[:space:]]*allowed'; then
		echo "proto-breaking: $subject: allowed by its Proto-Breaking line, not checked"
		continue
	fi
	export_tree "$c" "$tmp/$c/new"
	export_tree "$parent" "$tmp/$c/old"
	check "commit $subject" "$tmp/$c/new" "$tmp/$c/old" || status=1
	checked=$((checked + 1))
done
shallow=$(git rev-parse --git-path shallow)
if [[ -f $shallow ]]; then
	while read -r c; do
		if git merge-base --is-ancestor "$c" HEAD 2>/dev/null && git cat-file -e "$c:proto" 2>/dev/null &&
			[[ $(git rev-list --count "$c..HEAD") -lt $depth ]]; then
			echo "proto-breaking: $(git log -1 --format='%h %s' "$c"): its parent is not in this shallow clone, not checked" >&2
		fi
	done <"$shallow"
fi

# What is about to be committed: the working tree's proto/ against HEAD's.
if [[ -n $(git status --porcelain -- proto buf.yaml) ]]; then
	mkdir -p "$tmp/worktree"
	cp buf.yaml "$tmp/worktree/" && cp -R proto "$tmp/worktree/"
	if git cat-file -e HEAD:proto 2>/dev/null; then
		export_tree HEAD "$tmp/head"
		check "the uncommitted change to proto/" "$tmp/worktree" "$tmp/head" || status=1
		checked=$((checked + 1))
	fi
fi

if ((status == 0)); then
	echo "proto-breaking: no breaking change in $checked change(s) to proto/ among the last $depth commits"
fi
exit $status
