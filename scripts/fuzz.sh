#!/bin/sh
# Runs every Go fuzz target in the module. FUZZTIME is a count of inputs
# per target ("2000x", the default) or a duration ("60s", `make fuzz`).
# A failing input is saved by the go tool under the package's testdata/fuzz.
#
# Every failure fails the script. The default is a counted run: Go 1.26's
# coordinator can fail a timed run with a bare "context deadline exceeded"
# when -fuzztime ends while a worker is mid-call (golang/go#75804); a
# counted run never reaches that deadline, so it needs no tolerance.
set -eu
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-2000x}"
list=$(mktemp)
names=$(mktemp)
out=$(mktemp)
trap 'rm -f "$list" "$names" "$out"' EXIT
# One `go test -list` for the whole module: names come before their
# package's "ok" line. A package that does not build fails the script here.
if ! go test -list '^Fuzz' ./... >"$names" 2>&1; then
	cat "$names"
	echo "fuzz: go test -list failed"
	exit 1
fi
awk '
	/^Fuzz/ { names = names " " $1; next }
	/^ok / { if (names != "") { n = split(names, a, " "); for (i = 1; i <= n; i++) print $2, a[i] }; names = "" }
' "$names" >"$list"
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
[ $n -gt 0 ] || { echo "fuzz: no fuzz targets found"; exit 1; }
echo "fuzz: $n targets passed"
