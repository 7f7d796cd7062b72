#!/bin/sh
# Runs every Go fuzz target in the module for FUZZTIME (default 3s) each.
# A failing input is saved by the go tool under the package's testdata/fuzz.
set -eu
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-3s}"
list=$(mktemp)
out=$(mktemp)
trap 'rm -f "$list" "$out"' EXIT
# One `go test -list` for the whole module: names come before their
# package's "ok" line.
go test -list '^Fuzz' ./... | awk '
	/^Fuzz/ { names = names " " $1; next }
	/^ok / { if (names != "") { n = split(names, a, " "); for (i = 1; i <= n; i++) print $2, a[i] }; names = "" }
' >"$list"
n=0
while read -r pkg target; do
	echo "fuzz: $pkg $target ($FUZZTIME)"
	if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >"$out" 2>&1; then
		cat "$out"
		echo "fuzz: $pkg $target FAILED"
		exit 1
	fi
	n=$((n + 1))
done <"$list"
echo "fuzz: $n targets passed"
