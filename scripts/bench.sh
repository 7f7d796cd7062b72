#!/bin/sh
# `make bench`: runs every scripts/bench-*.sh. Each measures otagw against
# the physical limit (raw dd write, sha256, wire bit rate, the reference
# tool) in the same run and writes its table to docs/benchmarks-*.md.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
sh scripts/test-deps.sh
for b in scripts/bench-*.sh; do
	[ -e "$b" ] || continue
	echo "== $b"
	"./$b"  # each script names its own shell
done
