#!/bin/sh
# `make torture N=...`: N real power cuts of the QEMU gateway
# (tests/qemu/torture: NBD disks with a volatile write cache, SIGKILL of
# QEMU, checks after every cut). Prints every cut with its seed, every
# failure with its seed, and the figures docs/reliability.md quotes.
#
#   make torture N=1000            # SEED=... replays the same cut decisions
#   UNTIL=2026-12-02T16:30:00Z make torture N=1000   # stop early at that time
#   make torture N=1000 J=2        # two gateways side by side (a seed replays with the same J)
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
N="${1:-${N:-100}}"
J="${J:-1}"
SEED="${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
LOG="${TORTURE_LOG:-torture-$SEED.log}"
echo "torture: N=$N J=$J SEED=$SEED, full log in $LOG" >&2
echo "command: ${UNTIL:+UNTIL=$UNTIL }make torture N=$N J=$J SEED=$SEED" >&2
rc=0
OTAGW_TORTURE_CUTS="$N" OTAGW_TORTURE_WORKERS="$J" OTAGW_TORTURE_SEED="$SEED" OTAGW_TORTURE_UNTIL="${UNTIL:-}" \
	go test -count=1 -v -timeout 0 -run '^TestTorturePowerCuts$' ./tests/qemu/ >"$LOG" 2>&1 || rc=$?
grep -a -e 'torture: ' -e 'cut [0-9]* seed [0-9]*/' -e 'FAILURE' -e 'TORTURE-REPORT' -e 'torture_test.go' -e '^--- FAIL' "$LOG" | sed 's/^ *[a-z_]*\.go:[0-9]*: //' || true
if [ "$rc" -ne 0 ]; then
	echo "torture: FAILED (exit $rc), see $LOG" >&2
	exit "$rc"
fi
echo "torture: passed" >&2
